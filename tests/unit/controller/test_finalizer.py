"""No finalizer: kopf's own processing cycle, simulated on our registry and settings.

A finalizer would strand every sync (and its namespace) once the operator is uninstalled;
one left by an earlier version must be removed by a running operator, deleting objects too.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_asset_sync.controller import entrypoint
from support.kopf_cycle import raw_sync as _raw
from support.kopf_cycle import run_cycle


async def _cycle(raw: dict[str, Any], event_type: str | None) -> dict[str, Any]:
    return (await run_cycle(raw, event_type)).after


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
