"""`airflow_asset_sync_operator_sync_ready`: one series per sync, set wherever the operator
writes Ready, removed when the sync is deleted."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import pytest

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.controller import handlers
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.controller.metrics import OperatorMetrics, ready_value
from support.fake_kube import FakeKube

NS = "ready-ns"
NAME = "ready-sync"
CHILD = f"{NAME}-worker"
LOGGER = logging.getLogger("test")
SERIES = "airflow_asset_sync_operator_sync_ready"


def ready(
    source: OperatorMetrics | kopf.Memo, namespace: str = NS, name: str = NAME
) -> float | None:
    """The sync's Ready series in `source`, or in the runtime's metrics of a memo."""
    metrics = source if isinstance(source, OperatorMetrics) else handlers._runtime(source).metrics
    return metrics.registry.get_sample_value(SERIES, {"sync_namespace": namespace, "sync": name})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    fake = FakeKube()
    fake.add_sync(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": NAME, "namespace": NS, "uid": "sync-r", "generation": 1},
            "spec": {
                "source": {"url": "http://a:8080"},
                "targets": [{"name": "b", "url": "http://b:8080"}],
            },
        }
    )
    return fake


def _memo(fake: FakeKube) -> kopf.Memo:
    runtime = handlers.Runtime(
        kube=fake,
        config=OperatorConfig(worker_image="op/worker:1"),
        now=lambda: datetime(2024, 5, 1, tzinfo=UTC),
    )
    return kopf.Memo({handlers.MEMO_KEY: runtime})


def _body(fake: FakeKube) -> kopf.Body:
    raw = fake.get_sync(namespace=NS, name=NAME)
    assert raw is not None
    return kopf.Body(cast(kopf.RawBody, raw))


@pytest.mark.parametrize(
    ("conditions", "value"),
    [
        ([{"type": "Ready", "status": "True"}], 1.0),
        ([{"type": "Ready", "status": "False"}], 0.0),
        ([{"type": "Ready", "status": "Unknown"}], 0.0),
        ([{"type": "Stalled", "status": "True"}, {"type": "Ready", "status": "True"}], 1.0),
        ([{"type": "Stalled", "status": "True"}], 0.0),
        ([], 0.0),
        (None, 0.0),
    ],
)
def test_ready_value(conditions: list[dict[str, Any]] | None, value: float) -> None:
    assert ready_value(conditions) == value


def test_record_and_forget() -> None:
    metrics = OperatorMetrics()
    metrics.record_ready(namespace=NS, name=NAME, conditions=[{"type": "Ready", "status": "True"}])
    assert ready(metrics) == 1.0
    metrics.record_ready(namespace=NS, name=NAME, conditions=[{"type": "Ready", "status": "False"}])
    assert ready(metrics) == 0.0
    metrics.forget_sync(namespace=NS, name=NAME)
    assert ready(metrics) is None
    metrics.forget_sync(namespace=NS, name=NAME)  # twice: no error


def test_change_then_worker_ready_then_delete(fake: FakeKube) -> None:
    """The reconcile writes Ready=False (worker progressing), the Deployment's status turns it
    True (`refresh_from_deployment`), and the sync's deletion removes the series."""
    memo = _memo(fake)
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=memo, retry=0, logger=LOGGER)
    assert ready(memo) == 0.0
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))
    handlers.on_child_event(type="MODIFIED", body=deployment, namespace=NS, memo=memo)
    assert ready(memo) == 1.0
    # A resync of the ready sync keeps it at 1.
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)
    assert handlers._runtime(memo).resyncer.run_once() == 1
    assert ready(memo) == 1.0
    handlers.on_sync_event(type="DELETED", body=_body(fake), memo=memo)
    assert ready(memo) is None


def test_problem_is_not_ready(fake: FakeKube) -> None:
    memo = _memo(fake)
    handlers._runtime(memo).metrics.record_ready(
        namespace=NS, name=NAME, conditions=[{"type": "Ready", "status": "True"}]
    )
    raw = fake.get_sync(namespace=NS, name=NAME)
    assert raw is not None
    raw["spec"]["source"]["auth"] = {"basic": {"secretName": "missing"}}
    fake.add_sync(raw)
    with pytest.raises(kopf.TemporaryError):
        handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=memo, retry=0)
    assert ready(memo) == 0.0


def test_resync_of_a_vanished_sync_forgets_it(fake: FakeKube) -> None:
    memo = _memo(fake)
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)
    assert handlers._runtime(memo).resyncer.run_once() == 1
    assert ready(memo) == 0.0
    del fake.objects[(api.KIND, NS, NAME)]
    handlers._runtime(memo).resyncer.run_once()
    assert ready(memo) is None
