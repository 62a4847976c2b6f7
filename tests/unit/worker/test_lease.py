"""The worker's Lease: one writer per sync (acquire, wait, take over, release, fence).

Driven by a fake clock and an in-memory store that behaves like the API server where the
protocol depends on it: every write is conditional on the version read (409 otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_asset_sync.api.status import SourceStatus, TargetStatus
from airflow_asset_sync.clients.kube import KubeError
from airflow_asset_sync.worker.lease import (
    FencedOffsetStore,
    KubeLeaseStore,
    LeaseConflict,
    LeaseHolder,
    LeaseRecord,
    LeaseTimings,
    can_take,
    lease_manifest,
    micro_time,
    new_identity,
    record_from_manifest,
)
from airflow_asset_sync.worker.replayer import Replayer

from .fakes import FakeClock, MemoryStore, deliveries, envelope, settle
from .test_replayer import Rig, source_event

TIMINGS = LeaseTimings(duration=15.0, renew_every=5.0, renew_deadline=10.0, retry_every=1.0)


class FakeLeaseStore:
    """One Lease, with the API server's compare-and-swap on `version`."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self._version = 0
        #: Raised by every call while set (API server unreachable).
        self.failure: Exception | None = None
        #: While set to an unset Event, updates wait on it (a renewal that hangs).
        self.update_gate: asyncio.Event | None = None

    async def get(self) -> LeaseRecord | None:
        await asyncio.sleep(0)
        if self.failure is not None:
            raise self.failure
        return self.record

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        await asyncio.sleep(0)
        if self.failure is not None:
            raise self.failure
        if self.record is not None:
            raise LeaseConflict("exists")
        return self._store(record)

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        if self.update_gate is not None:
            await self.update_gate.wait()
        await asyncio.sleep(0)
        if self.failure is not None:
            raise self.failure
        if self.record is None or self.record.version != record.version:
            raise LeaseConflict("changed")
        return self._store(record)

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self._version += 1
        self.record = replace(record, version=str(self._version))
        return self.record

    def write_as(self, holder: str | None, duration_s: int = 15) -> None:
        """Another process writes the Lease (takes it, renews it, releases it)."""
        self._store(LeaseRecord(holder=holder, duration_s=duration_s))


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[bool, str]] = []

    def __call__(self, held: bool, reason: str) -> None:
        self.seen.append((held, reason))

    @property
    def held(self) -> bool:
        return bool(self.seen) and self.seen[-1][0]


def holder(
    store: FakeLeaseStore, clock: FakeClock, name: str = "pod-a_1", changes: Changes | None = None
) -> LeaseHolder:
    return LeaseHolder(store, identity=name, clock=clock, timings=TIMINGS, on_change=changes)


async def run_for(clock: FakeClock, seconds: float, step: float = 0.5) -> None:
    for _ in range(round(seconds / step)):
        await clock.advance(step)
        await settle()


# -- pure parts ---------------------------------------------------------------------------


def test_can_take_free_released_own_and_expired_only() -> None:
    other = LeaseRecord(holder="b", duration_s=15)
    assert can_take(None, me="a", unchanged_for=0)
    assert can_take(replace(other, holder=None), me="a", unchanged_for=0)
    assert can_take(replace(other, holder="a"), me="a", unchanged_for=0)
    assert not can_take(other, me="a", unchanged_for=14.9)
    assert can_take(other, me="a", unchanged_for=15)


def test_timings_must_leave_a_margin_before_expiry() -> None:
    with pytest.raises(ValueError, match="renew_deadline < duration"):
        LeaseTimings(duration=10, renew_every=5, renew_deadline=10)


def test_identity_is_the_pod_name_plus_a_suffix_per_process() -> None:
    a, b = new_identity("orders-worker-7d9f-x2"), new_identity("orders-worker-7d9f-x2")
    assert a.startswith("orders-worker-7d9f-x2_") and b.startswith("orders-worker-7d9f-x2_")
    assert a != b


def test_manifest_round_trip_and_micro_time_always_has_six_digits() -> None:
    at = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # zero microseconds
    assert micro_time(at) == "2026-03-01T12:00:00.000000Z"
    record = LeaseRecord(
        holder="p_1", duration_s=15, acquired=at, renewed=at, transitions=2, version="42"
    )
    owner = {"apiVersion": "a/v1", "kind": "K", "name": "s", "uid": "u"}
    body = lease_manifest(
        record, namespace="data", name="s-worker", labels={"x": "y"}, owner_reference=owner
    )
    assert body["metadata"] == {
        "name": "s-worker",
        "namespace": "data",
        "labels": {"x": "y"},
        "resourceVersion": "42",
        "ownerReferences": [owner],
    }
    assert body["spec"]["renewTime"] == "2026-03-01T12:00:00.000000Z"
    assert record_from_manifest(body) == record
    released = lease_manifest(
        replace(record, holder=None), namespace="d", name="n", labels={}, owner_reference=None
    )
    assert "holderIdentity" not in released["spec"]
    assert record_from_manifest(released).holder is None


class ConflictingApi:
    def get_lease(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        raise KubeError("create Lease: already exists", status=409)

    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        raise KubeError("update Lease: unreachable", status=None)


async def test_kube_store_maps_409_to_conflict_and_passes_other_errors() -> None:
    store = KubeLeaseStore(ConflictingApi(), namespace="d", name="n", labels={})
    assert await store.get() is None
    with pytest.raises(LeaseConflict):
        await store.create(LeaseRecord(holder="a", duration_s=15))
    with pytest.raises(KubeError):
        await store.update(LeaseRecord(holder="a", duration_s=15, version="1"))


# -- acquire ------------------------------------------------------------------------------


async def test_acquires_a_free_lease_at_once() -> None:
    store, clock, changes = FakeLeaseStore(), FakeClock(), Changes()
    lease = holder(store, clock, changes=changes)
    assert await lease.acquire(asyncio.Event())
    assert lease.is_held() and changes.held
    assert store.record is not None
    assert store.record.holder == "pod-a_1"
    assert store.record.duration_s == 15
    assert lease.generation == 1


async def test_two_candidates_at_once_only_one_wins() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    a, b = holder(store, clock, "a_1"), holder(store, clock, "b_1")
    stop = asyncio.Event()
    ta, tb = asyncio.create_task(a.acquire(stop)), asyncio.create_task(b.acquire(stop))
    await settle()
    assert [a.is_held(), b.is_held()].count(True) == 1
    stop.set()
    await asyncio.gather(ta, tb)


async def test_waits_while_held_and_logs_the_holder_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="airflow_asset_sync.worker.lease")
    store, clock, changes = FakeLeaseStore(), FakeClock(), Changes()
    store.write_as("old-pod_9")
    lease = holder(store, clock, changes=changes)
    stop = asyncio.Event()
    task = asyncio.create_task(lease.acquire(stop))
    for _ in range(3):  # the old pod renews every 5 s: never expires
        await run_for(clock, 5)
        store.write_as("old-pod_9")
    assert not task.done() and not lease.is_held()
    assert changes.seen[-1] == (False, "waiting for the lease held by old-pod_9")
    waiting = [r for r in caplog.records if "held by another worker" in r.getMessage()]
    assert len(waiting) == 1 and waiting[0].__dict__["holder"] == "old-pod_9"

    store.write_as(None)  # the old pod released it after its last write
    await run_for(clock, 1)
    assert task.done() and task.result() is True
    assert lease.is_held()
    assert store.record is not None and store.record.holder == "pod-a_1"


async def test_takes_over_after_expiry_when_the_holder_died() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    store.write_as("dead-pod_1")
    lease = holder(store, clock)
    task = asyncio.create_task(lease.acquire(asyncio.Event()))
    await run_for(clock, 14)
    assert not task.done()  # 15 s since we first saw that version: not yet
    await run_for(clock, 2)
    assert task.done() and lease.is_held()
    assert store.record is not None and store.record.transitions == 1


async def test_stop_while_waiting_returns_false_without_writing() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    store.write_as("other_1")
    lease = holder(store, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(lease.acquire(stop))
    await run_for(clock, 2)
    stop.set()
    assert await task is False
    assert store.record is not None and store.record.holder == "other_1"


# -- release ------------------------------------------------------------------------------


async def test_release_hands_over_at_once() -> None:
    store, clock, changes = FakeLeaseStore(), FakeClock(), Changes()
    old = holder(store, clock, "old_1", changes=changes)
    new = holder(store, clock, "new_1")
    assert await old.acquire(asyncio.Event())
    task = asyncio.create_task(new.acquire(asyncio.Event()))
    await run_for(clock, 3)
    assert not task.done()
    await old.release()
    assert not changes.held
    assert store.record is not None and store.record.holder is None
    await run_for(clock, 1)
    assert task.done() and new.is_held()


async def test_release_leaves_a_lease_someone_else_took() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    lease = holder(store, clock)
    assert await lease.acquire(asyncio.Event())
    store.write_as("newer_1")
    await lease.release()
    assert store.record is not None and store.record.holder == "newer_1"


# -- renew and fence ----------------------------------------------------------------------


async def test_renews_while_held() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    lease = holder(store, clock)
    assert await lease.acquire(asyncio.Event())
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop))
    await settle()
    versions = []
    for _ in range(4):
        await run_for(clock, 5)
        assert store.record is not None
        versions.append(store.record.version)
    assert len(set(versions)) == 4 and lease.is_held()
    stop.set()
    await keeper


async def test_fenced_after_failed_renewals_then_resumes_once_renewed() -> None:
    store, clock, changes = FakeLeaseStore(), FakeClock(), Changes()
    lease = holder(store, clock, changes=changes)
    assert await lease.acquire(asyncio.Event())
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop))
    await settle()
    store.failure = KubeError("no answer", status=None)
    await run_for(clock, 9.5)
    assert lease.is_held()  # renewals failing, still inside the deadline
    await run_for(clock, 0.5)
    assert not lease.is_held() and not changes.held  # fenced: no new writes
    waiter = asyncio.create_task(lease.wait_held(asyncio.Event()))
    await run_for(clock, 10)
    assert not waiter.done()

    store.failure = None  # the API server answers again; the record still names us
    await run_for(clock, 1)
    assert await waiter == 1  # same generation: nobody else held it in between
    assert lease.is_held() and changes.held
    stop.set()
    await keeper


async def test_fenced_while_a_renewal_hangs() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    lease = holder(store, clock)
    assert await lease.acquire(asyncio.Event())
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop))
    store.update_gate = asyncio.Event()  # the next renewal never returns
    await run_for(clock, 9.5)
    assert lease.is_held()
    await run_for(clock, 0.5)
    assert not lease.is_held()
    stop.set()
    store.update_gate.set()
    await keeper


async def test_lease_taken_over_while_fenced_is_only_taken_back_after_release() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    lease = holder(store, clock)
    assert await lease.acquire(asyncio.Event())
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop))
    store.failure = KubeError("no answer", status=None)
    await run_for(clock, 16)
    assert not lease.is_held()
    store.failure = None
    store.write_as("other_1")  # took over after expiry
    for _ in range(4):
        await run_for(clock, 5)
        store.write_as("other_1")
    assert not lease.is_held()
    store.write_as(None)
    await run_for(clock, 1)
    assert lease.is_held()
    assert lease.generation == 2  # taken from another holder: writers re-check the target
    stop.set()
    await keeper


async def test_fenced_store_skips_status_saves_while_not_held() -> None:
    store, clock = FakeLeaseStore(), FakeClock()
    lease = holder(store, clock)
    inner = MemoryStore()
    fenced = FencedOffsetStore(inner, lease)
    await fenced.save_source(SourceStatus(events_published=1))
    assert inner.source_saves == []
    assert await lease.acquire(asyncio.Event())
    await fenced.save_source(SourceStatus(events_published=2))
    await fenced.save_target(TargetStatus(name="t"))
    assert [s.events_published for s in inner.source_saves] == [2]
    assert len(inner.target_saves) == 1


# -- the replayer behind the fence --------------------------------------------------------


class ManualFence:
    def __init__(self) -> None:
        self.generation = 1
        self.held = asyncio.Event()
        self.held.set()

    async def wait_held(self, stop: asyncio.Event) -> int | None:
        while not self.held.is_set():
            if stop.is_set():
                return None
            await asyncio.sleep(0)
        return self.generation


async def test_replayer_writes_nothing_while_fenced_and_rechecks_after_a_hand_over() -> None:
    rig = Rig()
    fence = ManualFence()
    rig.replayer = Replayer(
        target=rig.replayer._target,
        client=rig.server.client(),
        subscription=rig.subscription,
        status=rig.status,
        clock=rig.clock,
        metrics=rig.metrics,
        options=rig.options,
        fence=fence,
    )
    envs = [envelope(source_event(n)) for n in range(1, 14)]
    await rig.replayer.replay(deliveries(envs[:10]), rig.stop)  # the start-up suspect window
    rig.server.requests.clear()

    fence.held.clear()  # lost the lease
    pending = asyncio.create_task(rig.replayer.replay(deliveries(envs[10:]), rig.stop))
    await settle()
    assert rig.server.requests == [] and not pending.done()

    # Meanwhile the new holder wrote event 12 (it had read it from the source too).
    other = Rig(server=rig.server, assets=())
    await other.replayer.replay(deliveries([envs[11]]), other.stop)
    rig.server.requests.clear()

    fence.generation = 2  # taken back after the other holder released it
    fence.held.set()
    await pending
    assert sorted(m.event_id for m in rig.markers()) == list(range(1, 14))  # each once
    assert rig.status.events_deduplicated == 1
    assert ("list_events") in [k for k, _ in rig.server.requests]


async def test_replayer_stopped_while_fenced_returns_without_writing() -> None:
    rig = Rig()
    fence = ManualFence()
    fence.held.clear()
    rig.replayer = Replayer(
        target=rig.replayer._target,
        client=rig.server.client(),
        subscription=rig.subscription,
        status=rig.status,
        clock=rig.clock,
        metrics=rig.metrics,
        options=rig.options,
        fence=fence,
    )
    task = asyncio.create_task(
        rig.replayer.replay(deliveries([envelope(source_event(1))]), rig.stop)
    )
    await settle()
    rig.stop.set()
    assert await task == []  # nothing done, nothing committed
    assert rig.written() == []
