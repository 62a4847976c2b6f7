"""Parked events (unknown assets, policy retry), their limits, and the lag of pending work."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_asset_sync.api.events import Envelope
from airflow_asset_sync.api.status import TargetStatus
from airflow_asset_sync.api.transport import Delivery
from airflow_asset_sync.clients.airflow.base import Unavailable
from airflow_asset_sync.worker.offsets import FileOffsetStore
from airflow_asset_sync.worker.parking import ParkingLimits

from .fakes import (
    FakeAirflow,
    FakeClient,
    ListSubscription,
    MemoryStore,
    deliveries,
    envelope,
    wait_until,
)
from .test_replayer import Rig, source_event

U = "s3://late/asset"  # unknown to the target at first
K = "s3://b/x"  # known


def stream(*uris: str) -> list[Envelope]:
    """Events 1..n, one per given URI, in that order."""
    return [envelope(source_event(i, uri)) for i, uri in enumerate(uris, start=1)]


def ids(rig: Rig, uri: str) -> list[int]:
    return [m.event_id for m, e in zip(rig.markers(), rig.written(), strict=True) if e.uri == uri]


class CheckingSubscription(ListSubscription):
    """Asserts at every commit that each parked delivery is already in the store."""

    def __init__(self, store: MemoryStore, items: Sequence[Delivery] = ()) -> None:
        super().__init__(items)
        self.store = store
        self.unknown: set[str] = {U}

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        stored = {e.id for t in self.store.status.targets for a in t.parked for e in a.events}
        for d in deliveries:
            if d.envelope is not None and d.envelope.event.uri in self.unknown:
                assert d.envelope.event.id in stored, f"{d.envelope.event.id} committed unstored"
        await super().commit(deliveries)


async def until_written(rig: Rig, uri: str, count: int) -> None:
    """Advance the fake clock until `count` events of `uri` are in the target."""
    for _ in range(200):
        if len(ids(rig, uri)) >= count:
            return
        await rig.clock.advance(1.0)
        await asyncio.sleep(0)
    raise AssertionError(f"{uri}: {ids(rig, uri)} written, wanted {count}")


async def test_known_assets_flow_while_one_is_unknown_and_parked_are_stored_first() -> None:
    store = MemoryStore()
    envs = stream(U, K, U, K, K, U, K, K, K, K, U, K, K)
    sub = CheckingSubscription(store, deliveries(envs))
    rig = Rig(assets=(K,), subscription=sub, save=store.save_target)
    task = asyncio.create_task(rig.replayer.run(rig.stop))
    await wait_until(lambda: len(sub.committed) == len(envs), what="everything committed")
    known = [e.event.id for e in envs if e.event.uri == K]
    assert ids(rig, K) == known  # all of them, in order, with no wait on the unknown one
    assert ids(rig, U) == []
    [asset] = rig.status.parked
    assert (asset.uri, asset.count) == (U, 4)
    assert [e.id for e in asset.events] == [1, 3, 6, 11]
    assert asset.oldest_event_time == envs[0].event.timestamp
    assert asset.parked_since == rig.clock.now()
    assert store.status.targets[0].parked_events == 4
    assert rig.status.unknown_assets == [U]
    rig.stop.set()
    await task


async def test_parked_asset_keeps_its_order_when_it_appears_between_batches() -> None:
    rig = Rig(assets=(K,))
    await rig.replayer.replay(deliveries(stream(U, U)), rig.stop)
    rig.server.add_asset(U)
    # Event 3 comes while 1 and 2 are still parked: it must queue behind them, not overtake.
    batch = [Delivery(envelope=envelope(source_event(3, U)), position=(0, 2))]
    assert await rig.replayer.replay(batch, rig.stop) == batch
    assert ids(rig, U) == []
    assert rig.status.parked_events == 3
    await rig.clock.advance(1.0)
    await rig.replayer.tend(rig.stop)
    assert ids(rig, U) == [1, 2, 3]
    assert rig.status.parked == []
    assert rig.status.events_replayed == 3


async def test_one_probe_per_parked_asset_not_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    probes: Counter[str] = Counter()
    original = FakeClient.asset_exists

    async def counting(self: FakeClient, uri: str) -> bool:
        probes[uri] += 1
        return await original(self, uri)

    monkeypatch.setattr(FakeClient, "asset_exists", counting)
    rig = Rig(assets=(K,))
    await rig.replayer.replay(deliveries(stream(*[U] * 30, *["s3://other/y"] * 5)), rig.stop)
    assert rig.status.parked_events == 35
    posts = [r for r in rig.server.requests if r[0] == "post_event"]
    assert len(posts) == 2  # one refused write per asset; the rest parked without a request
    for _ in range(8):  # back-offs 1, 2, 4, 8, 8 ...: 8 s of fake time = 3 probes
        await rig.clock.advance(1.0)
        await rig.replayer.tend(rig.stop)
    assert probes == {U: 3, "s3://other/y": 3}


async def test_parked_events_survive_a_restart_and_are_delivered_once(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first_store = FileOffsetStore(path)
    first = Rig(assets=(K,), save=first_store.save_target)
    envs = stream(U, K, U, U)
    await first.replayer.replay(deliveries(envs), first.stop)
    assert ids(first, K) == [2]
    # Crash. The asset appears, and (as if a drain was cut short by the crash) event 1 was
    # written into the target before the removal from the parked list was saved.
    server = first.server
    server.add_asset(U)
    server.create_event(U, envs[0].target_extra())

    status = (await FileOffsetStore(path).load()).target("t")
    assert status.parked_events == 3
    second_store = FileOffsetStore(path)
    await second_store.load()
    second = Rig(server=server, status=status, save=second_store.save_target)
    # The probe of a restored asset is due at once; its markers are checked before writing.
    await second.replayer.tend(second.stop)
    assert sorted(Counter(ids(second, U)).items()) == [(1, 1), (3, 1), (4, 1)]
    assert ids(second, U) == [1, 3, 4]
    assert second.status.events_deduplicated == 1
    assert (await FileOffsetStore(path).load()).target("t").parked == []
    # The transport hands an uncommitted delivery over again: not written twice.
    batch = [Delivery(envelope=envs[3], position=(0, 3))]
    await second.replayer.replay(batch, second.stop)
    assert ids(second, U) == [1, 3, 4]


async def test_count_limit_holds_the_stream_until_room_is_made() -> None:
    sub = ListSubscription(deliveries(stream(U, U, U, K)))
    rig = Rig(
        assets=(K,),
        subscription=sub,
        options={"parking": ParkingLimits(max_events=2), "fetch_timeout": 0.01},
    )
    task = asyncio.create_task(rig.replayer.run(rig.stop))
    await wait_until(lambda: ids(rig, K) == [4], what="the known asset written")
    await wait_until(lambda: len(rig.clock.sleeping) == 2, what="waiting for room, and tending")
    await rig.clock.advance(1.0)  # the next round of the wait for room
    await wait_until(lambda: "parking full" in (rig.status.last_error or ""), what="full")
    # Events 1 and 2 are parked; 3 waits for room, so this batch is not committed yet.
    assert sub.committed == []
    assert rig.status.parked_events == 2
    rig.server.add_asset(U)
    await until_written(rig, U, 3)
    await wait_until(lambda: len(sub.committed) == 4, what="the rest committed")
    assert ids(rig, U) == [1, 2, 3]
    assert rig.status.parked_events == 0
    rig.stop.set()
    await task


async def test_byte_limit_applies_too() -> None:
    rig = Rig(assets=(K,), options={"parking": ParkingLimits(max_bytes=1)})
    await rig.replayer.replay(deliveries(stream(U)), rig.stop)
    assert rig.replayer.parking.full() is not None


async def test_events_parked_past_the_age_limit_are_dropped_and_counted() -> None:
    rig = Rig(assets=(K,), options={"parking": ParkingLimits(max_age=timedelta(hours=1))})
    await rig.replayer.replay(deliveries(stream(U)), rig.stop)
    await rig.clock.advance(1800)
    await rig.replayer.replay(
        [Delivery(envelope=envelope(source_event(2, U)), position=(0, 1))], rig.stop
    )
    await rig.clock.advance(1801)  # event 1 is now parked for over an hour, event 2 not
    await rig.replayer.tend(rig.stop)
    assert [e.id for a in rig.status.parked for e in a.events] == [2]
    assert rig.status.events_skipped == 1
    assert rig.counter("events_skipped", reason="parked_expired") == 1
    assert rig.metrics.value("aas_parked_oldest_age_seconds", {"target": "t"}) == 1801
    await rig.clock.advance(1800)
    await rig.replayer.tend(rig.stop)
    assert rig.status.parked == [] and rig.status.unknown_assets == []
    assert rig.counter("events_skipped", reason="parked_expired") == 2


async def test_skip_policy_does_not_park() -> None:
    rig = Rig(assets=(K,), on_unknown_asset="skip")
    await rig.replayer.replay(deliveries(stream(U, K)), rig.stop)
    assert rig.status.parked == []
    assert rig.status.events_skipped == 1
    assert ids(rig, K) == [2]


# -- lag ------------------------------------------------------------------------------------


async def test_lag_is_zero_when_nothing_is_pending() -> None:
    """It used to freeze at the last replayed event's age: 170 s on an idle sync."""
    sub = ListSubscription(deliveries(stream(K, K)))
    rig = Rig(
        subscription=sub,
        status=TargetStatus(name="t", lag_seconds=170.0),
        options={"fetch_timeout": 0.01},
    )
    task = asyncio.create_task(rig.replayer.run(rig.stop))
    await wait_until(lambda: len(sub.committed) == 2, what="replayed")
    await wait_until(lambda: rig.status.lag_seconds == 0.0, what="lag back to 0 when idle")
    assert rig.metrics.value("aas_lag_seconds", {"target": "t"}) == 0.0
    rig.stop.set()
    await task


async def test_lag_is_measured_against_the_oldest_pending_event_not_parked_ones() -> None:
    rig = Rig(assets=(K,))  # clock at T0 + 60 s; event i has source time T0 + i s
    await rig.replayer.replay(deliveries(stream(U)), rig.stop)  # event 1 parked
    rig.server.post_failures.extend(Unavailable("503") for _ in range(3))  # target down
    batch = deliveries([envelope(source_event(2, U)), envelope(source_event(30, K))])
    task = asyncio.create_task(rig.replayer.replay(batch, rig.stop))
    await wait_until(lambda: bool(rig.clock.sleeping), what="target down, backing off")
    # Events 1 and 2 are parked (not pending work); the lag is that of the pending known
    # event 30: 60 - 30 s.
    assert rig.status.parked_events == 2
    assert rig.status.lag_seconds == pytest.approx(30.0)
    await rig.clock.advance(rig.clock.sleeping[0])
    await wait_until(lambda: len(rig.clock.sleep_calls) >= 2, what="second back-off")
    assert rig.status.lag_seconds == pytest.approx(31.0)  # it grows while the work waits
    while not task.done():
        if rig.clock.sleeping:
            await rig.clock.advance(rig.clock.sleeping[0])
        await asyncio.sleep(0)
    await task
    assert ids(rig, K) == [30]
    assert rig.status.lag_seconds == pytest.approx(60 + 1 + 2 + 4 - 30.0)


async def test_parked_events_are_json_round_tripped(tmp_path: Path) -> None:
    store = FileOffsetStore(tmp_path / "s.json")
    rig = Rig(assets=(K,), save=store.save_target)
    extra: dict[str, Any] = {"rows": 3, "nested": {"a": [1, 2]}, "t": "x"}
    env = envelope(source_event(7, U, extra=extra))
    await rig.replayer.replay(deliveries([env]), rig.stop)
    status = (await FileOffsetStore(tmp_path / "s.json").load()).target("t")
    rig2 = Rig(server=rig.server, status=status)
    rig2.server.add_asset(U)
    await rig2.replayer.tend(rig2.stop)
    [written] = [e for e in rig2.written() if e.uri == U]
    assert {k: written.extra[k] for k in extra} == extra
    assert written.extra["airflow_asset_sync"] == env.target_extra()["airflow_asset_sync"]


# -- the whole worker, in-process channel, state file ------------------------------------------


async def test_worker_parks_moves_the_checkpoint_on_and_delivers_after_a_crash(
    tmp_path: Path,
) -> None:
    from .test_pipeline import A, B, World, poll_cycle, spec, written

    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v1")
    target.add_asset(K)
    world = World(**{A: source, B: target})
    sync_spec = spec(A, {"name": "t", "url": B})
    path = tmp_path / "state.json"
    worker, _ = world.worker(sync_spec, store=FileOffsetStore(path))
    run = asyncio.create_task(worker.run())
    events = [source.emit(uri) for uri in (U, K, U, K, U)]
    await poll_cycle(world)
    await wait_until(lambda: len(written(target)) == 2, what="the known asset's events")
    await wait_until(
        lambda: FileOffsetStore(path)._read().source.checkpoint.timestamp == events[-1].timestamp,
        what="the checkpoint past the parked events",
    )
    saved = FileOffsetStore(path)._read().targets[0]
    assert [e.id for e in saved.parked[0].events] == [1, 3, 5]
    # A crash: every task of that worker dies at once (no graceful stop, no final flush).
    # Cancelling `run` alone would leave its replayer tasks running as orphans.
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)

    target.add_asset(U)
    again, _ = world.worker(sync_spec, store=FileOffsetStore(path))
    run = asyncio.create_task(again.run())
    for _ in range(50):
        if len(written(target)) == 5:
            break
        await world.clock.advance(1.0)
        await asyncio.sleep(0.001)
    order = [m.event_id for m, e in zip(written(target), target.rows, strict=True) if e.uri == U]
    assert order == [1, 3, 5]
    assert sorted(m.event_id for m in written(target)) == [1, 2, 3, 4, 5]
    await again.stop()
    await run
    assert FileOffsetStore(path)._read().targets[0].parked == []
