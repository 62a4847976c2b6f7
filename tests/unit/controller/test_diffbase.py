"""kopf's diff base lives in the sync's status: one PATCH per create, and upgrades read the
annotation earlier versions wrote (kopf's own processing cycle, no API server)."""

from __future__ import annotations

import json
from typing import Any

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.controller.diffbase import LEGACY_KEY
from support.kopf_cycle import raw_sync, run_cycle

LEGACY = f"{api.GROUP}/{LEGACY_KEY}"


def _essence(raw: dict[str, Any]) -> str:
    """What an earlier version stored in the annotation for `raw` (kopf's format)."""
    return json.dumps({"spec": raw["spec"]}, separators=(",", ":")) + "\n"


def _applies(kube: Any) -> int:
    return sum(1 for verb, _, _ in kube.calls if verb == "apply")


async def test_a_new_sync_keeps_its_diff_base_in_status_and_patches_nothing_else() -> None:
    cycle = await run_cycle(raw_sync(), None)
    assert _applies(cycle.kube) == 4, "the create handler ran"
    # Only a status part: kopf sends it to /status alone, one request instead of two.
    assert set(cycle.patch) == {"status"}, cycle.patch
    stored = json.loads(cycle.patch["status"]["lastHandledConfiguration"])
    assert stored["spec"] == raw_sync()["spec"]
    assert "status" not in stored  # never compared with itself


async def test_a_stored_diff_base_makes_an_unchanged_sync_a_no_op() -> None:
    first = await run_cycle(raw_sync(), None)
    again = await run_cycle(first.after, "MODIFIED")
    assert _applies(again.kube) == 0, "no change: no handler"
    assert again.patch == {}


async def test_the_annotation_of_an_earlier_version_is_read_not_taken_for_a_create() -> None:
    raw = raw_sync()
    raw["metadata"]["annotations"] = {LEGACY: _essence(raw)}
    cycle = await run_cycle(raw, "MODIFIED")
    assert _applies(cycle.kube) == 0, "the spec it records is the spec: nothing to do"


async def test_a_change_after_an_upgrade_moves_the_diff_base_into_status() -> None:
    old = raw_sync()
    raw = raw_sync()
    raw["spec"]["pollInterval"] = "7s"
    raw["metadata"]["annotations"] = {LEGACY: _essence(old), "team": "data"}
    cycle = await run_cycle(raw, "MODIFIED")
    assert _applies(cycle.kube) == 4, "the update handler ran"
    assert cycle.patch["metadata"]["annotations"] == {LEGACY: None}
    assert cycle.after["metadata"]["annotations"] == {"team": "data"}
    stored = json.loads(cycle.after["status"]["lastHandledConfiguration"])
    assert stored["spec"]["pollInterval"] == "7s"
    # The annotation's removal is not a change of the sync either.
    again = await run_cycle(cycle.after, "MODIFIED")
    assert _applies(again.kube) == 0
