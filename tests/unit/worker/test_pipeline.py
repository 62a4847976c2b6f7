"""SyncWorker end to end over fakes: flow, status, loop prevention, graceful stop, restart."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_asset_sync.api.events import Marker
from airflow_asset_sync.api.spec import Endpoint, SyncSpec, Target
from airflow_asset_sync.api.status import Failure, WorkerStatus
from airflow_asset_sync.api.transport import Delivery, Subscription
from airflow_asset_sync.clients.airflow.base import AirflowClient, Unavailable
from airflow_asset_sync.worker.channel import InProcessChannel
from airflow_asset_sync.worker.offsets import FileOffsetStore, OffsetStore
from airflow_asset_sync.worker.pipeline import (
    PARKED_BYTES_PER_SYNC,
    SyncWorker,
    WorkerOptions,
    replayer_options,
)
from airflow_asset_sync.worker.replayer import ReplayerOptions

from .fakes import T0, FakeAirflow, FakeClock, MemoryStore, wait_until

A, B, C = "http://airflow-a:8080", "http://airflow-b:8080", "http://airflow-c:8080"


def spec(source: str, *targets: dict[str, Any], **kw: Any) -> SyncSpec:
    return SyncSpec.model_validate(
        {"source": {"url": source}, "targets": list(targets), "startFrom": "earliest", **kw}
    )


class World:
    """Airflow instances by URL, one fake clock."""

    def __init__(self, **servers: FakeAirflow) -> None:
        self.servers = {url: server for url, server in servers.items()}
        self.clock = FakeClock()
        #: Connection failures still to come, by URL (instance down at start).
        self.down: dict[str, int] = {}

    async def factory(self, endpoint: Endpoint) -> AirflowClient:
        if self.down.get(endpoint.url, 0) > 0:
            self.down[endpoint.url] -= 1
            raise Unavailable(f"{endpoint.url}: connection refused")
        return self.servers[endpoint.url].client()

    def worker(
        self,
        sync_spec: SyncSpec,
        *,
        store: OffsetStore,
        subscriptions: dict[str, Subscription] | None = None,
        channel: InProcessChannel | None = None,
        options: WorkerOptions | None = None,
        sync: str = "team/sync",
    ) -> tuple[SyncWorker, InProcessChannel]:
        names = [t.name for t in sync_spec.targets]
        channel = channel or InProcessChannel(targets=names)
        subs = (
            subscriptions
            if subscriptions is not None
            else {n: channel.subscription(n) for n in names}
        )
        worker = SyncWorker(
            spec=sync_spec,
            sync=sync,
            client_factory=self.factory,
            publisher=channel,
            subscriptions=subs,
            store=store,
            clock=self.clock,
            options=options,
        )
        return worker, channel


def written(server: FakeAirflow) -> list[Marker]:
    markers = [Marker.from_extra(e.extra) for e in server.rows]
    return [m for m in markers if m is not None]


#: A poller's possible waits at pollInterval 1s: idle, or the faster pace while events flow.
POLL_WAITS = (1.0, 0.2)


def pollers_waiting(world: World) -> int:
    return sum(1 for s in world.clock.sleeping if any(abs(s - w) < 1e-6 for w in POLL_WAITS))


async def poll_cycle(world: World) -> None:
    """Let the poller's interval elapse once (1 s covers both of its paces)."""
    await wait_until(lambda: pollers_waiting(world) >= 1, what="poller waiting")
    await world.clock.advance(1.0)


async def test_events_flow_to_every_target_with_status(tmp_path: Path) -> None:
    source, v1, v3 = (
        FakeAirflow(api_version="v2"),
        FakeAirflow(api_version="v1"),
        FakeAirflow(api_version="v2"),
    )
    v1.add_asset("s3://new/orders")
    v3.add_asset("s3://old/orders")
    world = World(**{A: source, B: v1, C: v3})
    sync_spec = spec(
        A,
        {"name": "v1", "url": B, "rewrite": [{"match": "^s3://old/", "replace": "s3://new/"}]},
        {"name": "v3", "url": C},
        assets={"exclude": [{"glob": "*scratch*"}]},
    )
    store = FileOffsetStore(tmp_path / "offsets.json")
    worker, _ = world.worker(sync_spec, store=store)
    run = asyncio.create_task(worker.run())

    first = source.emit("s3://old/orders")
    source.emit("s3://old/scratch")
    await poll_cycle(world)
    second = source.emit("s3://old/orders")
    await poll_cycle(world)
    await wait_until(lambda: len(written(v3)) == 2, what="second event in v3")

    assert [(m.event_id, m.sync) for m in written(v1)] == [
        (first.id, "team/sync"),
        (second.id, "team/sync"),
    ]
    assert [e.uri for e in v1.rows] == ["s3://new/orders"] * 2
    assert [m.origin for m in written(v3)] == [A] * 2

    await worker.stop()
    await run
    saved = await FileOffsetStore(tmp_path / "offsets.json").load()
    assert saved.source.checkpoint.timestamp == second.timestamp
    assert saved.source.events_published == 2
    assert saved.source.events_filtered == 1
    assert saved.source.api_version == "v2"
    by_name = {t.name: t for t in saved.targets}
    assert by_name["v1"].events_replayed == 2
    assert by_name["v1"].api_version == "v1"
    assert by_name["v3"].last_source_event_id == second.id
    assert worker.metrics.value("aas_events_published_total") == 2


async def test_bidirectional_pair_does_not_ping_pong() -> None:
    a, b = FakeAirflow(api_version="v1"), FakeAirflow(api_version="v2")
    for server in (a, b):
        server.add_asset("s3://shared")
    world = World(**{A: a, B: b})
    forward, _ = world.worker(spec(A, {"name": "b", "url": B}), store=MemoryStore(), sync="x/ab")
    back, _ = world.worker(spec(B, {"name": "a", "url": A}), store=MemoryStore(), sync="x/ba")
    runs = [asyncio.create_task(w.run()) for w in (forward, back)]

    original = a.emit("s3://shared")
    from_b = b.emit("s3://shared")
    for _ in range(4):
        await wait_until(lambda: pollers_waiting(world) == 2, what="both pollers idle")
        await world.clock.advance(1.0)

    # Each instance holds its own event plus exactly one copy of the other's.
    assert [(m.origin, m.event_id) for m in written(b)] == [(A, original.id)]
    assert [(m.origin, m.event_id) for m in written(a)] == [(B, from_b.id)]
    assert len(a.rows) == 2
    assert len(b.rows) == 2
    assert forward.metrics.value("aas_events_filtered_total", {"reason": "synced"}) == 1
    assert back.metrics.value("aas_events_filtered_total", {"reason": "synced"}) == 1
    for worker in (forward, back):
        await worker.stop()
    await asyncio.gather(*runs)


async def test_stop_finishes_the_write_in_flight_then_commits_and_checkpoints() -> None:
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    target.add_asset("s3://b/x")
    world = World(**{A: source, B: target})
    store = MemoryStore()
    worker, channel = world.worker(spec(A, {"name": "t", "url": B}), store=store)
    run = asyncio.create_task(worker.run())
    await wait_until(lambda: 1.0 in world.clock.sleeping, what="first idle poll")

    target.post_gate = asyncio.Event()
    event = source.emit("s3://b/x")
    await world.clock.advance(1.0)
    await wait_until(lambda: target.in_flight == 1, what="POST in flight")

    worker.request_stop()  # what the SIGTERM handler does
    await asyncio.sleep(0)
    assert not run.done()
    assert worker.health.ready()[0] is False  # stopping
    target.post_gate.set()
    await asyncio.wait_for(run, timeout=5)

    assert [m.event_id for m in written(target)] == [event.id]
    assert channel.committed("t") == 1
    assert store.status.source.checkpoint.timestamp == event.timestamp
    [status] = store.status.targets
    assert status.events_replayed == 1
    polls = len([r for r in source.requests if r[0] == "list_events"])
    await world.clock.advance(10)
    assert len([r for r in source.requests if r[0] == "list_events"]) == polls


async def test_stop_completes_a_publish_larger_than_one_replay_batch() -> None:
    # In-process, the poller's publish waits for the replayers. Stopping the replayers first
    # would strand it (and its checkpoint) behind the first replay batch.
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    target.add_asset("s3://b/x")
    world = World(**{A: source, B: target})
    store = MemoryStore()
    options = WorkerOptions(stop_grace=2.0, replayer=ReplayerOptions(commit_batch=2))
    worker, channel = world.worker(spec(A, {"name": "t", "url": B}), store=store, options=options)
    target.post_gate = asyncio.Event()
    events = [source.emit("s3://b/x") for _ in range(5)]
    run = asyncio.create_task(worker.run())
    await wait_until(lambda: target.in_flight == 1, what="first POST in flight")
    worker.request_stop()
    target.post_gate.set()
    await asyncio.wait_for(run, timeout=5)
    assert sorted(m.event_id for m in written(target)) == [e.id for e in events]
    assert channel.committed("t") == 5
    assert store.status.source.checkpoint.timestamp == events[-1].timestamp


async def test_a_target_down_at_start_is_retried_while_the_others_run() -> None:
    source, up, down = (FakeAirflow(api_version="v2") for _ in range(3))
    for server in (up, down):
        server.add_asset("s3://b/x")
    world = World(**{A: source, B: up, C: down})
    world.down[C] = 2
    store = MemoryStore()
    sync_spec = spec(A, {"name": "up", "url": B}, {"name": "down", "url": C})
    worker, _ = world.worker(sync_spec, store=store)
    run = asyncio.create_task(worker.run())
    event = source.emit("s3://b/x")

    await wait_until(lambda: len(written(up)) == 1, what="the reachable target")
    assert written(down) == []
    status = worker.status
    assert status is not None
    assert (status.target("down").last_error or "").startswith("connect: Unavailable")
    await world.clock.advance(1.5)  # first connect back-off: 1 s (+-10%)
    assert world.down[C] == 0  # the second attempt failed too
    assert written(down) == []
    await world.clock.advance(2.5)  # second back-off: 2 s (+-10%)
    await wait_until(lambda: len(written(down)) == 1, what="the late target")
    assert [m.event_id for m in written(down)] == [event.id]
    assert status.target("down").last_error is None
    await worker.stop()
    await run


async def test_sigterm_stops_the_worker_gracefully() -> None:
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    world = World(**{A: source, B: target})
    store = MemoryStore()
    worker, _ = world.worker(spec(A, {"name": "t", "url": B}), store=store)
    run = asyncio.create_task(worker.run())
    await wait_until(lambda: 1.0 in world.clock.sleeping, what="worker running")
    worker.install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(run, timeout=5)
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    assert store.target_saves  # final flush happened


async def test_stop_with_a_target_down_abandons_the_publish_without_checkpoint() -> None:
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    target.add_asset("s3://b/x")
    target.post_failures.extend(Unavailable("503") for _ in range(1000))  # the target is down
    world = World(**{A: source, B: target})
    store = MemoryStore()
    options = WorkerOptions(stop_grace=0.2)
    worker, _ = world.worker(spec(A, {"name": "t", "url": B}), store=store, options=options)
    run = asyncio.create_task(worker.run())
    source.emit("s3://b/x")
    await wait_until(lambda: bool(target.requests), what="first write attempt")
    await worker.stop()
    await run
    assert store.status.source.checkpoint.initialized is True
    assert store.status.source.checkpoint.timestamp is None  # never passed the event
    assert "503" in (store.status.targets[0].last_error or "")


async def test_restart_continues_without_duplicates(tmp_path: Path) -> None:
    source, target = FakeAirflow(api_version="v1"), FakeAirflow(api_version="v2")
    target.add_asset("s3://b/x")
    world = World(**{A: source, B: target})
    sync_spec = spec(A, {"name": "t", "url": B})
    path = tmp_path / "offsets.json"

    worker, _ = world.worker(sync_spec, store=FileOffsetStore(path))
    run = asyncio.create_task(worker.run())
    for _ in range(3):
        source.emit("s3://b/x")
    await wait_until(lambda: len(written(target)) == 3, what="three written")
    await worker.stop()
    await run

    for _ in range(2):
        source.emit("s3://b/x")
    again, _ = world.worker(sync_spec, store=FileOffsetStore(path))
    run = asyncio.create_task(again.run())
    await wait_until(lambda: len(written(target)) == 5, what="five written")
    await poll_cycle(world)
    await again.stop()
    await run

    assert sorted(m.event_id for m in written(target)) == [1, 2, 3, 4, 5]
    saved = await FileOffsetStore(path).load()
    assert saved.source.events_published == 5  # counters continue across restarts
    assert saved.targets[0].events_replayed == 5


class Crash(BaseException):
    """Something no component handles."""


class CrashingSubscription:
    async def start(self) -> None:
        pass

    async def fetch(self, max_records: int, timeout_s: float) -> list[Delivery]:
        await asyncio.sleep(0)
        raise Crash("bug")

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_a_dying_component_stops_the_worker_and_raises() -> None:
    world = World(**{A: FakeAirflow(api_version="v2"), B: FakeAirflow(api_version="v2")})
    store = MemoryStore()
    worker, _ = world.worker(
        spec(A, {"name": "t", "url": B}), store=store, subscriptions={"t": CrashingSubscription()}
    )
    with pytest.raises(Crash):
        await asyncio.wait_for(worker.run(), timeout=5)
    assert worker.health.live()[0] is False
    assert store.target_saves  # status still flushed on the way out


async def test_subscriptions_must_match_targets() -> None:
    world = World(**{A: FakeAirflow(api_version="v2")})
    with pytest.raises(ValueError, match="one subscription per target"):
        world.worker(spec(A, {"name": "t", "url": B}), store=MemoryStore(), subscriptions={})


async def test_a_targets_parking_limit_comes_from_its_spec() -> None:
    """`targets[].parking.maxEvents: 2`: the third event of an unknown asset is not parked
    (with the default of 1,000 it would be), while the known asset's event is written."""
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    target.add_asset("s3://known")
    world = World(**{A: source, B: target})
    sync_spec = spec(A, {"name": "t", "url": B, "parking": {"maxEvents": 2, "maxAge": "2h"}})
    # The third late event holds the stream (back-pressure): the stop abandons that publish.
    options = WorkerOptions(stop_grace=0.5)
    worker, _ = world.worker(sync_spec, store=MemoryStore(), options=options)
    run = asyncio.create_task(worker.run())
    for _ in range(3):
        source.emit("s3://late")
    known = source.emit("s3://known")
    await poll_cycle(world)
    await wait_until(lambda: [m.event_id for m in written(target)] == [known.id], what="known")
    status = worker.status
    assert status is not None
    await wait_until(lambda: status.target("t").parked_events == 2, what="two parked")
    assert sum(len(a.events) for a in status.target("t").parked) == 2
    await worker.stop()
    await run


def test_targets_share_the_parked_bytes_a_status_object_can_hold() -> None:
    """256 KiB per target up to 4 targets; past that 1 MiB shared (etcd's object limit)."""
    target = Target.model_validate({"name": "t", "url": B})
    assert replayer_options(ReplayerOptions(), target, targets=1).parking.max_bytes == 256 * 1024
    assert replayer_options(ReplayerOptions(), target, targets=4).parking.max_bytes == 256 * 1024
    twenty = replayer_options(ReplayerOptions(), target, targets=20).parking
    assert twenty.max_bytes * 20 <= PARKED_BYTES_PER_SYNC
    assert twenty.max_events == 1000 and twenty.max_age == timedelta(days=30)


async def test_a_target_that_cannot_connect_reports_its_failure_and_no_stale_lag() -> None:
    """Seen on a cluster: the last healthy lag stayed in status while nothing was written."""
    source, down = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    world = World(**{A: source, C: down})
    world.down[C] = 10_000
    stale = WorkerStatus()
    stale.target("down").lag_seconds = 0.28
    stale.source.failure = Failure(
        component="Source", kind="AuthFailed", retriable=False, message="old", since=T0
    )
    stale.target("gone").lag_seconds = 31.0  # a target removed from the spec
    store = MemoryStore(stale)
    worker, _ = world.worker(spec(A, {"name": "down", "url": C}), store=store)
    run = asyncio.create_task(worker.run())
    await wait_until(lambda: worker.status is not None, what="status loaded")
    status = worker.status
    assert status is not None
    assert status.source.failure is None, "an earlier pod's failure is not this one's"
    await wait_until(
        lambda: status.target("down").last_error is not None, what="first connect failure"
    )
    assert status.target("down").lag_seconds is None
    assert status.target("down").failure is None, "an outage is reported after the grace"
    for _ in range(20):
        await world.clock.advance(10.0)
    failure = status.target("down").failure
    assert failure is not None
    assert (failure.reason, failure.retriable) == ("TargetUnavailable", True)
    await worker.stop()
    await run
    assert [t.name for t in store.status.targets] == ["down"]
