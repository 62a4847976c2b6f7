"""`StatusOffsetStore`: saves from the flush and from replayers (parked events) never reorder."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from airflow_asset_sync.api.spec import ObjectRef
from airflow_asset_sync.api.status import ParkedAsset, ParkedEvent, TargetStatus
from airflow_asset_sync.worker.status_store import StatusOffsetStore


class SlowKube:
    """Applies merge patches of `targets`; the first patch is slow to arrive."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.calls = 0
        self.lock = threading.Lock()

    def get_sync(self, *, namespace: str, name: str) -> dict[str, Any]:
        return {"status": dict(self.status)}

    def patch_sync_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            time.sleep(0.2)  # a slow request: without ordering, a newer one overtakes it
        with self.lock:
            self.status.update(status)
        return {"status": self.status}


async def test_a_newer_target_save_is_never_overwritten_by_an_older_one() -> None:
    kube = SlowKube()
    store = StatusOffsetStore(kube, ObjectRef(namespace="ns", name="s"))  # type: ignore[arg-type]
    await store.load()
    target = TargetStatus(name="t")
    first = asyncio.create_task(store.save_target(target))  # e.g. the periodic flush
    await asyncio.sleep(0.05)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = ParkedEvent(id=1, origin="o", sync="s", timestamp=now, parked_at=now)
    target.parked.append(ParkedAsset(uri="s3://x", count=1, events=[event]))
    await store.save_target(target)  # the replayer, before it commits the parked delivery
    await first
    [saved] = kube.status["targets"]
    assert [e["id"] for a in saved.get("parked", []) for e in a["events"]] == [1]
