"""No finalizer: kopf's own processing cycle, simulated on our registry and settings.

A finalizer would strand every sync (and its namespace) once the operator is uninstalled;
one left by an earlier version must be removed by a running operator, deleting objects too.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import bodies, ephemera, patches, references
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, processing

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.controller import entrypoint, handlers
from airflow_asset_sync.controller.config import OperatorConfig
from support.fake_kube import FakeKube

RESOURCE = references.Resource(
    group=api.GROUP, version=api.VERSION, plural=api.PLURAL, namespaced=True
)


def _raw(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "generation": 1, **meta},
        "spec": {"source": {"url": "http://a:8080"}, "targets": [{"name": "b", "url": "http://b"}]},
    }


async def _cycle(raw: dict[str, Any], event_type: str | None) -> dict[str, Any]:
    """One kopf processing cycle; returns the object as kopf's patch would leave it."""
    config = OperatorConfig(worker_image="w:1")
    settings = entrypoint.build_settings(clusterwide=True, peering=None, priority=1)
    registry = handlers.build_registry(config)
    runtime = handlers.Runtime(kube=FakeKube(), config=config)
    memo = ephemera.AnyMemo(kopf.Memo({handlers.MEMO_KEY: runtime}))
    memory = inventory.ResourceMemory(memo=memo)
    body = bodies.Body(cast(bodies.RawBody, raw))
    patch = patches.Patch(body=body)
    logger = logging.getLogger("test")
    await processing.process_resource_causes(
        lifecycle=kopf.lifecycles.all_at_once,
        indexers=indexing.OperatorIndexers(),
        registry=registry,
        settings=settings,
        resource=RESOURCE,
        raw_event={"type": event_type, "object": raw},  # type: ignore[typeddict-item]
        body=body,
        patch=patch,
        memory=memory,
        local_logger=logger,  # type: ignore[arg-type]
        event_logger=logger,  # type: ignore[arg-type]
        stream_pressure=None,
        operator_paused=None,
        consistency_time=None,
    )
    after = copy.deepcopy(raw)
    for fn in patch.fns:  # kopf's finalizer changes: functions over the raw body
        fn(cast(bodies.RawBody, after))
    return after


async def test_a_new_sync_gets_no_finalizer() -> None:
    after = await _cycle(_raw(), None)
    assert "finalizers" not in after["metadata"]


@pytest.mark.parametrize("deleting", [False, True], ids=["live", "stranded-in-deletion"])
async def test_the_legacy_finalizer_is_removed(deleting: bool) -> None:
    meta: dict[str, Any] = {"finalizers": ["other.example/keep", entrypoint.LEGACY_FINALIZER]}
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T00:00:00Z"
    after = await _cycle(_raw(**meta), "MODIFIED")
    assert after["metadata"]["finalizers"] == ["other.example/keep"]


def test_the_legacy_finalizer_name_is_still_configured() -> None:
    settings = entrypoint.build_settings(clusterwide=True, peering=None, priority=1)
    assert settings.persistence.finalizer == "airflow-asset-sync.github.io/cleanup"
