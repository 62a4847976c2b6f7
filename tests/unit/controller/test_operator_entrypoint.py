"""kopf settings and the `run_operator` entry point (kopf.run itself is replaced)."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from airflow_asset_sync import controller
from airflow_asset_sync.controller import entrypoint, handlers
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.controller.diffbase import StatusDiffBase
from support.fake_kube import FakeKube


def test_settings_keep_kopf_state_in_typed_places() -> None:
    settings = entrypoint.build_settings(clusterwide=True, peering=None, priority=None)
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "airflow-asset-sync.github.io"
    assert isinstance(diffbase, StatusDiffBase)  # status.lastHandledConfiguration (a string)
    assert settings.persistence.finalizer == "airflow-asset-sync.github.io/cleanup"
    assert settings.watching.server_timeout == entrypoint.WATCH_SERVER_TIMEOUT_SECONDS
    assert settings.posting.level == logging.WARNING


def test_standalone_without_peering() -> None:
    settings = entrypoint.build_settings(clusterwide=True, peering=None, priority=None)
    assert settings.peering.standalone
    assert not settings.peering.mandatory


def test_peering_for_replicas_with_distinct_priorities() -> None:
    one = entrypoint.build_settings(clusterwide=False, peering="aas", priority=None)
    two = entrypoint.build_settings(clusterwide=False, peering="aas", priority=None)
    assert one.peering.name == "aas"
    assert one.peering.mandatory
    assert not one.peering.standalone
    assert not one.peering.clusterwide
    # Equal priorities would both run; random ones elect a single active replica.
    assert one.peering.priority != two.peering.priority
    assert (
        entrypoint.build_settings(clusterwide=True, peering="aas", priority=7).peering.priority == 7
    )


def _run(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> dict[str, Any]:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: captured.update(kw))
    controller.run_operator(
        config=OperatorConfig(worker_image="w:1"), kube_api=FakeKube(), **kwargs
    )
    return captured


def test_cluster_wide_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _run(monkeypatch)
    assert args["clusterwide"] is True
    assert args["namespaces"] == []
    assert args["standalone"] is True
    assert args["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    assert isinstance(args["memo"][handlers.MEMO_KEY], handlers.Runtime)
    assert isinstance(args["registry"], kopf.OperatorRegistry)


def test_namespace_scoped_with_peering(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _run(monkeypatch, namespaces=["team-a", "team-b"], peering="aas", priority=3)
    assert args["clusterwide"] is False
    assert args["namespaces"] == ["team-a", "team-b"]
    assert args["peering_name"] == "aas"
    assert args["standalone"] is False
    assert args["priority"] == 3
    assert args["settings"].peering.clusterwide is False
    # Exact namespace names: no cluster-wide namespace/CRD watches (and no ClusterRole).
    assert args["settings"].scanning.disabled is True
    assert _run(monkeypatch)["settings"].scanning.disabled is False


def test_cli_ports_override_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _run(monkeypatch, liveness_port=8181, metrics_port=0)
    assert args["liveness_endpoint"] == "http://0.0.0.0:8181/healthz"
    assert args["memo"][handlers.MEMO_KEY].config.metrics_port == 0
    assert _run(monkeypatch, liveness_port=0)["liveness_endpoint"] is None
