"""The replayer: mapping, marker, commit-after-ack, unknown assets, errors, crash dedup."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from airflow_asset_sync.api.events import MARKER_KEY, Envelope, Marker, SourceEvent
from airflow_asset_sync.api.spec import Target
from airflow_asset_sync.api.status import MAX_UNKNOWN_ASSETS, TargetStatus
from airflow_asset_sync.api.transport import Delivery, Subscription
from airflow_asset_sync.clients.airflow.base import BadRequest, Unavailable
from airflow_asset_sync.worker.backoff import BackoffPolicy
from airflow_asset_sync.worker.channel import InProcessChannel
from airflow_asset_sync.worker.metrics import WorkerMetrics
from airflow_asset_sync.worker.parking import ParkingLimits
from airflow_asset_sync.worker.replayer import (
    Replayer,
    ReplayerOptions,
    SaveTarget,
    _committable,
)

from .fakes import (
    T0,
    FakeAirflow,
    FakeClock,
    ListSubscription,
    Version,
    deliveries,
    envelope,
    wait_until,
)

NO_JITTER = BackoffPolicy(initial=1.0, maximum=8.0, jitter=0.0)


def source_event(event_id: int, uri: str = "s3://b/x", **kw: Any) -> SourceEvent:
    return SourceEvent(id=event_id, uri=uri, timestamp=T0 + timedelta(seconds=event_id), **kw)


def target(**kw: Any) -> Target:
    spec: dict[str, Any] = {"name": "t", "url": "http://target:8080"}
    spec.update(kw)
    return Target.model_validate(spec)


class Rig:
    def __init__(
        self,
        *,
        version: Version = "v2",
        assets: tuple[str, ...] = ("s3://b/x",),
        subscription: Subscription | None = None,
        server: FakeAirflow | None = None,
        clock: FakeClock | None = None,
        metrics: WorkerMetrics | None = None,
        status: TargetStatus | None = None,
        save: SaveTarget | None = None,
        options: dict[str, Any] | None = None,
        **target_kw: Any,
    ) -> None:
        self.server = server or FakeAirflow(api_version=version)
        for uri in assets:
            self.server.add_asset(uri)
        self.subscription = subscription if subscription is not None else ListSubscription()
        self.clock = clock or FakeClock(start=T0 + timedelta(minutes=1))
        self.metrics = metrics or WorkerMetrics()
        self.status = status if status is not None else TargetStatus(name="t")
        self.options = ReplayerOptions(
            commit_batch=10,
            backoff=NO_JITTER,
            park_probe_backoff=NO_JITTER,
            concurrency=3,
            **(options or {}),
        )
        self.replayer = Replayer(
            target=target(**target_kw),
            client=self.server.client(),
            subscription=self.subscription,
            status=self.status,
            clock=self.clock,
            metrics=self.metrics,
            options=self.options,
            save=save,
        )
        self.stop = asyncio.Event()

    def written(self) -> list[SourceEvent]:
        return [e for e in self.server.rows if e.source_dag_id is None]

    def markers(self) -> list[Marker]:
        out = []
        for e in self.written():
            marker = Marker.from_extra(e.extra)
            assert marker is not None
            out.append(marker)
        return out

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.value(f"aas_{name}_total", {"target": "t", **labels})


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_writes_source_extra_plus_marker_and_commits(version: Version) -> None:
    rig = Rig(version=version)
    env = envelope(source_event(5, extra={"rows": 10, MARKER_KEY: {"stale": True}}))
    batch = deliveries([env])

    committed = await rig.replayer.replay(batch, rig.stop)

    assert committed == batch
    [written] = rig.written()
    assert written.uri == "s3://b/x"
    assert written.extra["rows"] == 10
    assert written.extra["from_rest_api"] is True  # Airflow adds it; harmless
    marker = Marker.from_extra(written.extra)
    assert marker is not None
    assert (marker.origin, marker.event_id, marker.sync) == (env.origin, 5, env.sync)
    assert marker.timestamp == env.event.timestamp  # the source time travels in the marker
    assert rig.status.events_replayed == 1
    assert rig.status.last_source_event_id == 5
    assert rig.status.lag_seconds == pytest.approx(55.0)  # clock 1 min after T0, event at +5 s
    assert rig.metrics.value("aas_lag_seconds", {"target": "t"}) == 55.0
    assert rig.counter("events_replayed") == 1


async def test_rewrite_rules_map_the_uri() -> None:
    rig = Rig(
        assets=("s3://new-bucket/orders", "gs://other/x"),
        rewrite=[
            {"match": "^s3://old-bucket/", "replace": "s3://new-bucket/"},
            {"match": "^s3://", "replace": "gs://other/never-reached-for-old-bucket/"},
        ],
    )
    await rig.replayer.replay(
        deliveries([envelope(source_event(1, "s3://old-bucket/orders"))]), rig.stop
    )
    assert [e.uri for e in rig.written()] == ["s3://new-bucket/orders"]


async def test_commit_happens_only_after_the_target_acknowledged() -> None:
    sub = ListSubscription()
    rig = Rig(subscription=sub)
    rig.server.post_gate = asyncio.Event()
    task = asyncio.create_task(
        rig.replayer.replay(deliveries([envelope(source_event(1))]), rig.stop)
    )
    await wait_until(lambda: rig.server.in_flight == 1, what="POST in flight")
    await asyncio.sleep(0)
    assert sub.commits == []
    rig.server.post_gate.set()
    await task
    assert [d.position for d in sub.committed] == [(0, 0)]


async def test_fetch_size_bounds_what_is_uncommitted() -> None:
    sub = ListSubscription(deliveries([envelope(source_event(i)) for i in range(1, 26)]))
    rig = Rig(subscription=sub)
    task = asyncio.create_task(rig.replayer.run(rig.stop))
    await wait_until(lambda: len(sub.committed) == 25, what="all committed")
    rig.stop.set()
    await task
    assert set(sub.fetch_sizes) == {rig.options.commit_batch}
    assert [len(c) for c in sub.commits] == [10, 10, 5]
    assert len(rig.written()) == 25


async def test_unknown_asset_is_parked_and_written_when_it_appears() -> None:
    sub = ListSubscription()
    rig = Rig(assets=(), subscription=sub)
    batch = deliveries([envelope(source_event(1, "s3://late/asset"))])
    committed = await rig.replayer.replay(batch, rig.stop)
    # Parked (stored), so committed: the stream goes on.
    assert committed == batch
    assert rig.written() == []
    assert rig.status.unknown_assets == ["s3://late/asset"]
    assert rig.status.parked_events == 1
    [parked] = rig.status.parked
    assert (parked.uri, parked.count) == ("s3://late/asset", 1)
    assert rig.metrics.value("aas_parked_events", {"target": "t"}) == 1
    await rig.clock.advance(1.0)  # the first probe is due after one back-off
    await rig.replayer.tend(rig.stop)
    assert rig.status.parked_events == 1
    rig.server.add_asset("s3://late/asset")  # the consuming DAG got deployed
    await rig.replayer.tend(rig.stop)  # next probe not due yet (back-off 2 s)
    assert rig.written() == []
    await rig.clock.advance(2.0)
    await rig.replayer.tend(rig.stop)
    assert [e.uri for e in rig.written()] == ["s3://late/asset"]
    assert rig.status.unknown_assets == []
    assert rig.status.parked == [] and rig.status.parked_events == 0
    assert rig.status.events_replayed == 1
    assert rig.counter("unknown_asset_retries") == 1
    assert rig.metrics.value("aas_parked_events", {"target": "t"}) == 0


async def test_a_target_that_is_down_blocks_only_its_own_target() -> None:
    clock = FakeClock()
    batch = deliveries([envelope(source_event(1)), envelope(source_event(2))])
    blocked_sub, healthy_sub = ListSubscription(batch), ListSubscription(batch)
    blocked = Rig(clock=clock, subscription=blocked_sub)
    blocked.server.post_failures.extend(Unavailable("503") for _ in range(100))
    healthy = Rig(clock=clock, subscription=healthy_sub)
    tasks = [asyncio.create_task(r.replayer.run(r.stop)) for r in (blocked, healthy)]
    await wait_until(lambda: len(healthy_sub.committed) == 2, what="healthy commits")
    await wait_until(lambda: bool(clock.sleeping), what="blocked target backing off")
    assert blocked_sub.committed == []
    for rig in (blocked, healthy):
        rig.stop.set()
    await asyncio.gather(*tasks)


async def test_unknown_asset_skip_policy_counts_and_commits() -> None:
    sub = ListSubscription()
    rig = Rig(assets=("s3://b/x",), subscription=sub, on_unknown_asset="skip")
    batch = deliveries(
        [envelope(source_event(1, "s3://missing/a")), envelope(source_event(2, "s3://b/x"))]
    )
    committed = await rig.replayer.replay(batch, rig.stop)
    assert committed == batch
    assert [e.uri for e in rig.written()] == ["s3://b/x"]
    assert rig.status.events_skipped == 1
    assert rig.status.unknown_assets == ["s3://missing/a"]
    assert rig.counter("events_skipped", reason="unknown_asset") == 1
    assert rig.clock.sleep_calls == []


async def test_unknown_assets_list_is_capped() -> None:
    rig = Rig(assets=(), on_unknown_asset="skip")
    many = [envelope(source_event(i, f"s3://missing/{i}")) for i in range(MAX_UNKNOWN_ASSETS + 5)]
    await rig.replayer.replay(deliveries(many), rig.stop)
    assert len(rig.status.unknown_assets) == MAX_UNKNOWN_ASSETS
    assert rig.status.events_skipped == MAX_UNKNOWN_ASSETS + 5


async def test_foreign_messages_are_counted_committed_and_passed() -> None:
    sub = ListSubscription()
    rig = Rig(subscription=sub)
    batch = [
        Delivery(envelope=None, position=(0, 0), problem="not JSON"),
        Delivery(envelope=envelope(source_event(1)), position=(0, 1)),
    ]
    committed = await rig.replayer.replay(batch, rig.stop)
    assert committed == batch
    assert len(rig.written()) == 1
    assert rig.status.events_skipped == 1
    assert rig.counter("events_skipped", reason="foreign") == 1


async def test_transient_errors_are_retried_and_nothing_is_committed_meanwhile() -> None:
    sub = ListSubscription()
    rig = Rig(subscription=sub)
    rig.server.post_failures.extend([Unavailable("503"), Unavailable("timeout")])
    task = asyncio.create_task(
        rig.replayer.replay(deliveries([envelope(source_event(1))]), rig.stop)
    )
    for _ in range(2):
        await wait_until(lambda: bool(rig.clock.sleeping), what="back-off")
        assert sub.commits == []
        await rig.clock.advance(rig.clock.sleeping[0])
    await task
    assert len(rig.written()) == 1
    assert len(sub.committed) == 1
    assert rig.status.last_error is None


async def test_write_that_landed_before_a_timeout_is_not_written_twice() -> None:
    rig = Rig()
    rig.server.post_failures_after_write.append(Unavailable("read timeout"))
    task = asyncio.create_task(
        rig.replayer.replay(deliveries([envelope(source_event(1))]), rig.stop)
    )
    await wait_until(lambda: bool(rig.clock.sleeping), what="back-off")
    await rig.clock.advance(rig.clock.sleeping[0])
    await task
    assert len(rig.written()) == 1
    assert rig.status.events_deduplicated == 1


async def test_rejected_event_is_given_up_after_retries() -> None:
    sub = ListSubscription()
    rig = Rig(subscription=sub)
    rig.server.post_failures.extend([BadRequest("422")] * 3)
    batch = deliveries([envelope(source_event(1)), envelope(source_event(2))])
    task = asyncio.create_task(rig.replayer.replay(batch, rig.stop))
    for _ in range(2):
        await wait_until(lambda: bool(rig.clock.sleeping), what="back-off")
        await rig.clock.advance(rig.clock.sleeping[0])
    assert await task == batch
    assert rig.status.events_failed == 1
    assert [m.event_id for m in rig.markers()] == [2]
    assert rig.counter("events_failed") == 1


async def test_stop_during_backoff_commits_only_the_done_prefix() -> None:
    sub = ListSubscription()
    # No room to park: the unknown asset's event waits (back-pressure).
    rig = Rig(subscription=sub, assets=("s3://b/x",), options={"parking": ParkingLimits(0)})
    batch = deliveries(
        [
            envelope(source_event(1)),
            envelope(source_event(2, "s3://missing/y")),
            envelope(source_event(3)),
        ]
    )
    task = asyncio.create_task(rig.replayer.replay(batch, rig.stop))
    await wait_until(lambda: bool(rig.clock.sleeping), what="parking-full back-off")
    await rig.clock.advance(rig.clock.sleeping[0])
    await wait_until(lambda: bool(rig.clock.sleeping), what="still waiting for room")
    assert "parking full" in (rig.status.last_error or "")
    rig.stop.set()
    committed = await task
    # Event 3 was written (another asset) but sits behind the undone event 2 in the
    # partition: committing it would make a restart skip event 2.
    assert [d.position for d in committed] == [(0, 0)]
    assert sorted(m.event_id for m in rig.markers()) == [1, 3]


def test_committable_is_a_prefix_per_partition() -> None:
    ds = [
        Delivery(envelope=None, position=(0, 0)),
        Delivery(envelope=None, position=(1, 0)),
        Delivery(envelope=None, position=(0, 1)),
        Delivery(envelope=None, position=(1, 1)),
        Delivery(envelope=None, position=(0, 2)),
    ]
    assert _committable(ds, {0, 1, 3, 4}) == [ds[0], ds[1], ds[3]]


async def test_concurrency_is_bounded_and_each_asset_stays_in_order() -> None:
    uris = tuple(f"s3://b/{i}" for i in range(6))
    rig = Rig(assets=uris)
    rig.server.post_gate = asyncio.Event()
    envs = [envelope(source_event(n, uris[n % 6])) for n in range(1, 31)]
    task = asyncio.create_task(rig.replayer.replay(deliveries(envs[:10]), rig.stop))
    await wait_until(lambda: rig.server.in_flight == 3, what="three POSTs in flight")
    await asyncio.sleep(0)
    assert rig.server.in_flight == 3
    rig.server.post_gate.set()
    await task
    await rig.replayer.replay(deliveries(envs[10:20]), rig.stop)
    assert rig.server.max_in_flight == 3
    for uri in uris:
        order = [m.event_id for m in rig.markers() if m.event_id % 6 == int(uri[-1])]
        assert order == sorted(order)


async def test_by_default_one_post_is_in_flight_per_target() -> None:
    """Concurrent POSTs to a SQLite-backed Airflow 3.3 wait on each other's database lock and
    fail with 500 (see `ReplayerOptions.concurrency`), so the default writes one at a time,
    even across assets (each asset still in order)."""
    uris = tuple(f"s3://b/{i}" for i in range(4))
    rig = Rig(assets=uris)
    rig.replayer = Replayer(
        target=target(),
        client=rig.server.client(),
        subscription=rig.subscription,
        status=rig.status,
        clock=rig.clock,
        metrics=rig.metrics,
    )
    assert ReplayerOptions().concurrency == 1
    rig.server.post_gate = asyncio.Event()
    envs = [envelope(source_event(n, uris[n % 4])) for n in range(1, 13)]
    task = asyncio.create_task(rig.replayer.replay(deliveries(envs), rig.stop))
    await wait_until(lambda: rig.server.in_flight == 1, what="one POST in flight")
    for _ in range(5):
        await asyncio.sleep(0)
    assert rig.server.in_flight == 1
    rig.server.post_gate.set()
    await task
    assert rig.server.max_in_flight == 1
    assert len(rig.markers()) == 12


class FlakyCommit(ListSubscription):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def commit(self, deliveries: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("coordinator moved")
        await super().commit(deliveries)


async def test_failed_commit_is_retried_before_fetching_more() -> None:
    sub = FlakyCommit(failures=2)
    rig = Rig(subscription=sub)
    batch = deliveries([envelope(source_event(1))])
    task = asyncio.create_task(rig.replayer.replay(batch, rig.stop))
    for _ in range(2):
        await wait_until(lambda: bool(rig.clock.sleeping), what="commit back-off")
        await rig.clock.advance(rig.clock.sleeping[0])
    assert await task == batch
    assert sub.committed == batch
    assert rig.counter("replay_errors", kind="commit") == 2


async def test_duplicate_delivery_is_written_once() -> None:
    rig = Rig()
    env = envelope(source_event(1))
    rig.replayer._suspect_left = 0  # past the restart window: only the LRU protects
    await rig.replayer.replay(deliveries([env]), rig.stop)
    await rig.replayer.replay(deliveries([env]), rig.stop)
    assert len(rig.written()) == 1
    assert rig.status.events_deduplicated == 1


# -- crash / restart --------------------------------------------------------------------------


class HangingCommit:
    """Wraps a subscription so commit never returns: a crash between POST and commit."""

    def __init__(self, inner: Subscription) -> None:
        self.inner = inner
        self.commit_started = asyncio.Event()

    async def start(self) -> None:
        await self.inner.start()

    async def fetch(self, max_records: int, timeout_s: float) -> list[Delivery]:
        return await self.inner.fetch(max_records, timeout_s)

    async def commit(self, deliveries: Any) -> None:
        self.commit_started.set()
        await asyncio.Event().wait()

    async def stop(self) -> None:
        await self.inner.stop()


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_restart_after_crash_between_post_and_commit_writes_nothing_twice(
    version: Version,
) -> None:
    channel = InProcessChannel(targets=["t"])
    server = FakeAirflow(api_version=version)
    uris = ("s3://b/a", "s3://b/b")
    for uri in uris:
        server.add_asset(uri)
    server.emit("s3://b/a", extra={"unrelated": True})  # other events in the target

    envs = [envelope(source_event(n, uris[n % 2])) for n in range(1, 8)]
    publish = asyncio.create_task(channel.publish(envs))

    first_sub = HangingCommit(channel.subscription("t"))
    await first_sub.start()
    first = Rig(subscription=first_sub, server=server)
    crashed = asyncio.create_task(first.replayer.run(first.stop))
    await first_sub.commit_started.wait()
    crashed.cancel()  # the process dies: written, never committed
    await asyncio.gather(crashed, return_exceptions=True)
    assert len(first.written()) == 7
    assert channel.committed("t") == 0

    second_sub = channel.subscription("t")
    await second_sub.start()  # resumes after the last commit: everything comes again
    second = Rig(subscription=second_sub, server=server)
    server.requests.clear()
    task = asyncio.create_task(second.replayer.run(second.stop))
    await publish  # returns once the target committed all seven
    second.stop.set()
    await task

    assert sorted(m.event_id for m in second.markers()) == list(range(1, 8))
    assert second.status.events_deduplicated == 7
    assert second.status.events_replayed == 0
    # One listing per asset for the whole suspect window, not one per event.
    lookups = [q for kind, q in server.requests if kind == "list_events"]
    assert sorted(q.asset_uri for q in lookups) == sorted(uris)


async def test_restart_writes_what_the_crashed_replayer_had_not_written() -> None:
    channel = InProcessChannel(targets=["t"])
    server = FakeAirflow(api_version="v2")
    server.add_asset("s3://b/x")
    envs = [envelope(source_event(n)) for n in range(1, 5)]
    publish = asyncio.create_task(channel.publish(envs))

    server.post_gate = asyncio.Event()
    first_sub = channel.subscription("t")
    await first_sub.start()
    first = Rig(subscription=first_sub, server=server)
    crashed = asyncio.create_task(first.replayer.run(first.stop))
    await wait_until(lambda: server.in_flight == 1, what="first POST in flight")
    server.post_gate.set()
    await wait_until(lambda: len(first.written()) == 1, what="one written")
    crashed.cancel()
    await asyncio.gather(crashed, return_exceptions=True)
    written_before = len(first.written())

    second_sub = channel.subscription("t")
    await second_sub.start()
    second = Rig(subscription=second_sub, server=server)
    task = asyncio.create_task(second.replayer.run(second.stop))
    await publish
    second.stop.set()
    await task
    assert sorted(m.event_id for m in second.markers()) == [1, 2, 3, 4]
    assert second.status.events_deduplicated == written_before
    assert second.status.events_replayed == 4 - written_before


async def test_suspect_window_ends_after_commit_batch_deliveries() -> None:
    rig = Rig()
    envs = [envelope(source_event(n)) for n in range(1, 16)]
    await rig.replayer.replay(deliveries(envs[:10]), rig.stop)  # commit_batch = 10: suspects
    rig.server.requests.clear()
    await rig.replayer.replay(deliveries(envs[10:]), rig.stop)
    assert [k for k, _ in rig.server.requests] == ["post_event"] * 5  # no lookups any more


async def test_envelope_target_extra_survives_serialisation() -> None:
    env = envelope(source_event(3, extra={"a": 1}))
    assert Envelope.from_bytes(env.to_bytes()).target_extra() == env.target_extra()


async def test_another_syncs_copies_do_not_count_as_this_syncs_deliveries() -> None:
    """The dedup key is (origin, event id, sync): a second sync between the same instances
    delivers its own copy of every event, even where the restart check sees the first sync's
    copies (before, it skipped those few and copied the rest: dedup in part only)."""
    server = FakeAirflow(api_version="v2")
    server.add_asset("s3://b/x")
    events = [source_event(n) for n in range(1, 5)]
    first = Rig(server=server)
    await first.replayer.replay(
        deliveries([envelope(e, sync="ns/old") for e in events]), first.stop
    )

    second = Rig(server=server)  # fresh: its first deliveries are checked against the target
    batch = deliveries([envelope(e, sync="ns/new") for e in events])
    assert await second.replayer.replay(batch, second.stop) == batch

    by_sync: dict[str, list[int]] = {}
    for marker in second.markers():
        by_sync.setdefault(marker.sync, []).append(marker.event_id)
    assert {k: sorted(v) for k, v in by_sync.items()} == {
        "ns/old": [1, 2, 3, 4],
        "ns/new": [1, 2, 3, 4],
    }
    assert second.status.events_deduplicated == 0

    third = Rig(server=server)  # ns/new restarted: its own copies are found, nothing doubles
    assert await third.replayer.replay(batch, third.stop) == batch
    assert third.status.events_deduplicated == 4
    assert len(third.written()) == 8
