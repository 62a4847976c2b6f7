"""`StatusOffsetStore`: saves from the poller, the flush and replayers never reorder."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from airflow_asset_sync.api.spec import ObjectRef
from airflow_asset_sync.api.status import (
    Checkpoint,
    ParkedAsset,
    ParkedEvent,
    SourceStatus,
    TargetStatus,
)
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


class OvertakableKube:
    """Applies merge patches of `source`; the first request is slow, and ends early if
    another request overtakes it (which then lands first, as on a real API server)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.entered = threading.Event()
        self.overtaken = threading.Event()
        self.in_flight = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def get_sync(self, *, namespace: str, name: str) -> dict[str, Any]:
        return {"status": dict(self.status)}

    def patch_sync_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        with self.lock:
            first = not self.entered.is_set()
            self.in_flight += 1
            if self.in_flight > 1:
                self.overlapped = True
        if first:
            self.entered.set()
            self.overtaken.wait(timeout=0.5)  # a slow request
        with self.lock:
            self.status.update(status)
            self.in_flight -= 1
        if not first:
            self.overtaken.set()
        return {"status": self.status}


async def test_a_cancelled_save_still_in_flight_is_not_overtaken_by_the_next() -> None:
    # The worker's stop cancels the periodic flush and then flushes once more. A cancelled
    # save's request goes on in its thread; the final save must not be sent beside it, or
    # the older body can land last (an older checkpoint and counters in the status).
    kube = OvertakableKube()
    store = StatusOffsetStore(kube, ObjectRef(namespace="ns", name="s"))  # type: ignore[arg-type]
    await store.load()
    periodic = asyncio.create_task(store.save_source(SourceStatus(events_published=1)))
    await asyncio.to_thread(kube.entered.wait)
    periodic.cancel()
    await asyncio.gather(periodic, return_exceptions=True)
    await store.save_source(SourceStatus(events_published=2))  # the final flush
    assert not kube.overlapped
    assert kube.status["source"]["eventsPublished"] == 2


async def test_the_pollers_checkpoint_and_the_flush_never_interleave() -> None:
    # `Poller._advance` and `SyncWorker.flush` both save `status.source`: the checkpoint
    # saved last must be the one that stays.
    kube = OvertakableKube()
    store = StatusOffsetStore(kube, ObjectRef(namespace="ns", name="s"))  # type: ignore[arg-type]
    await store.load()
    flush = asyncio.create_task(store.save_source(SourceStatus(events_published=1)))
    await asyncio.to_thread(kube.entered.wait)
    advance = SourceStatus(events_published=2, checkpoint=Checkpoint(seen_ids=[7]))
    await asyncio.gather(flush, store.save_source(advance))
    assert not kube.overlapped
    assert kube.status["source"]["eventsPublished"] == 2
    assert kube.status["source"]["checkpoint"]["seenIds"] == [7]


async def test_targets_removed_from_the_spec_leave_the_next_targets_patch() -> None:
    kube = SlowKube()
    kube.calls = 1  # no slow first request here
    kube.status = {
        "targets": [{"name": "gone", "lagSeconds": 31.0}, {"name": "b", "lagSeconds": 2.0}],
        "lagSeconds": 31.0,
    }
    store = StatusOffsetStore(kube, ObjectRef(namespace="ns", name="s"))  # type: ignore[arg-type]
    status = await store.load(targets={"b"})
    assert [t.name for t in status.targets] == ["b"]
    await store.save_target(status.target("b"))
    assert [t["name"] for t in kube.status["targets"]] == ["b"]
    assert kube.status["lagSeconds"] == 2.0
