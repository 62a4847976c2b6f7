"""Delivery modes per target (`targets[].delivery`): eachEvent, oneRunPerEvent, coalesce.

The fake target plays Airflow's queue: each created event queues every consumer DAG of its
asset, and `FakeAirflow.run_consumers` is one scheduler loop turning each queued (DAG, asset)
into one run, so a burst written at once folds into one run, as it does in Airflow.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pydantic
import pytest

from airflow_asset_sync.api.events import Envelope, Marker
from airflow_asset_sync.api.spec import Target
from airflow_asset_sync.api.status import TargetStatus
from airflow_asset_sync.clients.airflow.base import Unavailable
from airflow_asset_sync.worker.parking import ParkingLimits
from airflow_asset_sync.worker.scan import marker_keys
from airflow_asset_sync.worker.verify import delivered_counts

from .fakes import T0, ListSubscription, MemoryStore, deliveries, envelope, wait_until
from .test_replayer import Rig, source_event

A = "s3://b/x"  # consumed by dag "consume_a"
B = "s3://b/y"  # consumed by dag "consume_b"
ONE = {"mode": "oneRunPerEvent"}


def burst(uri: str, first: int, n: int) -> list[Envelope]:
    return [envelope(source_event(i, uri, extra={"n": i})) for i in range(first, first + n)]


def consumed(rig: Rig, uri: str) -> list[int]:
    """Source ids written to `uri`, in the target's order (coalesced writes expanded)."""
    out: list[int] = []
    for event in rig.written():
        marker = Marker.from_extra(event.extra)
        if event.uri == uri and marker is not None:
            out.extend(marker.event_ids)
    return out


def runs(rig: Rig, dag_id: str) -> list[list[int]]:
    """The consumer runs of `dag_id`, each as the source ids of the events it consumed."""
    by_target_id = {e.id: e for e in rig.server.rows}
    out = []
    for run in rig.server.runs[dag_id]:
        ids: list[int] = []
        for target_id in run:
            marker = Marker.from_extra(by_target_id[target_id].extra)
            assert marker is not None
            ids.extend(marker.event_ids)
        out.append(ids)
    return out


def rig_with_consumers(**kw: Any) -> Rig:
    rig = Rig(assets=(A, B), **kw)
    rig.server.add_consumer(A, "consume_a")
    rig.server.add_consumer(B, "consume_b")
    return rig


# -- the spec ---------------------------------------------------------------------------------


def target(delivery: dict[str, Any]) -> Target:
    return Target.model_validate({"name": "t", "url": "http://t:8080", "delivery": delivery})


def test_default_is_each_event_and_window_is_parsed() -> None:
    assert Target.model_validate({"name": "t", "url": "http://t:8080"}).delivery.mode == "eachEvent"
    assert target({"mode": "coalesce", "window": "1m30s"}).delivery.window_seconds == 90.0


@pytest.mark.parametrize(
    ("delivery", "where", "says"),
    [
        ({"mode": "everyEvent"}, "delivery.mode", "'eachEvent', 'oneRunPerEvent' or 'coalesce'"),
        ({"mode": "coalesce"}, "delivery", "delivery.window is required"),
        ({"mode": "coalesce", "window": "-5s"}, "delivery.window", "is not a duration"),
        ({"mode": "coalesce", "window": "0s"}, "delivery.window", "between 100ms and 10m"),
        ({"mode": "coalesce", "window": "11m"}, "delivery.window", "between 100ms and 10m"),
        ({"mode": "oneRunPerEvent", "window": "5s"}, "delivery", "only for delivery.mode coalesce"),
        ({"window": "5s"}, "delivery", "only for delivery.mode coalesce"),
    ],
)
def test_bad_delivery_names_the_field(delivery: dict[str, Any], where: str, says: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        target(delivery)
    [error] = caught.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == where
    assert says in error["msg"]


# -- eachEvent: today's behaviour ---------------------------------------------------------------


async def test_each_event_writes_a_burst_at_once_and_the_target_folds_it() -> None:
    rig = rig_with_consumers()
    batch = deliveries(burst(A, 1, 5))
    assert await rig.replayer.replay(batch, rig.stop) == batch
    assert consumed(rig, A) == [1, 2, 3, 4, 5]
    assert not any(r[0] == "queued_consumers" for r in rig.server.requests)  # no extra calls
    rig.server.run_consumers()
    assert runs(rig, "consume_a") == [[1, 2, 3, 4, 5]]  # one run for five events


# -- oneRunPerEvent ---------------------------------------------------------------------------


async def drain_with_scheduler(rig: Rig, *, rounds: int = 40) -> None:
    for _ in range(rounds):
        rig.server.run_consumers()
        await rig.clock.advance(1.0)
        await rig.replayer.tend(rig.stop)


async def test_one_run_per_event_holds_the_next_event_until_the_previous_one_ran() -> None:
    store = MemoryStore()
    rig = rig_with_consumers(delivery=ONE, save=store.save_target)
    batch = deliveries([*burst(A, 1, 4), *burst(B, 5, 1)])

    committed = await rig.replayer.replay(batch, rig.stop)

    assert committed == batch  # held events are stored, so everything is committed
    assert consumed(rig, A) == [1] and consumed(rig, B) == [5]
    [held] = rig.status.parked
    assert (held.uri, held.reason, [e.id for e in held.events]) == (
        A,
        "awaitingConsumer",
        [2, 3, 4],
    )
    assert store.status.targets[0].parked[0].reason == "awaitingConsumer"  # saved before commit
    assert rig.status.unknown_assets == []  # not an unknown asset
    assert rig.metrics.value("aas_awaiting_consumer_events", {"target": "t"}) == 3

    await drain_with_scheduler(rig)

    assert consumed(rig, A) == [1, 2, 3, 4]  # in order, once each
    assert runs(rig, "consume_a") == [[1], [2], [3], [4]]  # one run per event
    assert runs(rig, "consume_b") == [[5]]
    assert rig.status.parked == [] and rig.status.events_replayed == 5
    assert rig.metrics.value("aas_awaiting_consumer_events", {"target": "t"}) == 0


async def test_a_consumer_that_never_runs_holds_only_its_own_asset_and_never_expires() -> None:
    limits = ParkingLimits(max_age=timedelta(minutes=1))
    rig = rig_with_consumers(delivery=ONE, options={"parking": limits})
    await rig.replayer.replay(deliveries(burst(A, 1, 3)), rig.stop)
    for first in (10, 20, 30):  # B keeps flowing, batch after batch; its consumer runs
        batch = deliveries([*burst(A, first, 1), *burst(B, first + 1, 1)])
        assert await rig.replayer.replay(batch, rig.stop) == batch
        rig.server.queued[B].clear()  # B's consumer runs; A's is stuck (no scheduler for it)
        await rig.clock.advance(600.0)  # far past parking.maxAge
        await rig.replayer.tend(rig.stop)
    assert consumed(rig, B) == [11, 21, 31]
    assert consumed(rig, A) == [1]
    [held] = rig.status.parked
    assert [e.id for e in held.events] == [2, 3, 10, 20, 30]  # kept in order, none dropped
    assert rig.status.events_skipped == 0


async def test_a_paused_consumer_is_never_queued_so_nothing_waits_for_it() -> None:
    rig = Rig(assets=(A,), delivery=ONE)  # no consumer queued: paused, or none at all
    batch = deliveries(burst(A, 1, 3))
    assert await rig.replayer.replay(batch, rig.stop) == batch
    assert consumed(rig, A) == [1, 2, 3]
    assert rig.status.parked == []


async def test_held_events_survive_a_restart_and_are_written_once(tmp_path: Any) -> None:
    store = MemoryStore()
    rig = rig_with_consumers(delivery=ONE, save=store.save_target)
    await rig.replayer.replay(deliveries(burst(A, 1, 3)), rig.stop)
    saved = TargetStatus.model_validate(store.status.targets[0].model_dump())
    # A crash: a new replayer on the saved status (and the same target).
    again = Rig(server=rig.server, status=saved, delivery=ONE, assets=())
    await drain_with_scheduler(again)
    assert consumed(again, A) == [1, 2, 3]
    assert runs(again, "consume_a") == [[1], [2], [3]]


async def test_an_error_reading_the_queue_is_retried_not_taken_for_consumed() -> None:
    rig = rig_with_consumers(delivery=ONE)
    await rig.replayer.replay(deliveries(burst(A, 1, 1)), rig.stop)
    rig.server.list_failures.append(Unavailable("target down"))
    task = asyncio.create_task(rig.replayer.replay(deliveries(burst(A, 2, 1)), rig.stop))
    await wait_until(lambda: rig.clock.sleeping != [], what="a back-off")
    assert consumed(rig, A) == [1]
    await rig.clock.advance(1.0)
    await task
    assert [e.id for e in rig.status.parked[0].events] == [2]  # still queued: held, not written


# -- coalesce ---------------------------------------------------------------------------------

COALESCE = {"mode": "coalesce", "window": "2s"}


async def test_coalesce_writes_one_event_per_asset_listing_every_source_id() -> None:
    rig = rig_with_consumers(delivery=COALESCE)
    batch = deliveries([*burst(A, 1, 3), *burst(B, 4, 1), *burst(A, 5, 1)])

    assert await rig.replayer.replay(batch, rig.stop) == batch

    [to_a] = [e for e in rig.written() if e.uri == A]
    marker = Marker.from_extra(to_a.extra)
    assert marker is not None
    assert marker.coalesced == (1, 2, 3, 5) and marker.event_id == 5
    assert to_a.extra["n"] == 5  # the newest event's extra
    [to_b] = [e for e in rig.written() if e.uri == B]
    assert "coalesced" not in to_b.extra["airflow_asset_sync"]  # a single event: a plain copy
    assert (rig.status.events_replayed, rig.status.events_coalesced) == (5, 3)
    assert rig.counter("events_coalesced") == 3
    # verify counts each source id once, none missing, none duplicated
    counts = delivered_counts(rig.written(), origin="http://source:8080", sync="ns/sync")
    assert counts == Counter({1: 1, 2: 1, 3: 1, 4: 1, 5: 1})


async def test_coalesced_events_are_not_written_again_after_a_restart() -> None:
    rig = rig_with_consumers(delivery=COALESCE)
    await rig.replayer.replay(deliveries(burst(A, 1, 4)), rig.stop)
    # Crashed before the commit: the same deliveries come again, plus two new ones.
    again = Rig(server=rig.server, delivery=COALESCE, assets=())
    await again.replayer.replay(deliveries(burst(A, 1, 6)), again.stop)
    markers = [Marker.from_extra(e.extra) for e in again.written()]
    assert [m.coalesced for m in markers if m is not None] == [(1, 2, 3, 4), (5, 6)]
    assert again.status.events_deduplicated == 4


async def test_coalesce_gathers_deliveries_until_the_window_has_passed() -> None:
    sub = ListSubscription(deliveries(burst(A, 1, 2)))
    rig = rig_with_consumers(delivery=COALESCE, subscription=sub, options={"fetch_timeout": 0.05})
    task = asyncio.create_task(rig.replayer.run(rig.stop))
    await wait_until(lambda: rig.clock.sleeping != [], what="the replayer to gather")
    sub.add(*deliveries(burst(A, 3, 2)))
    assert rig.written() == []  # nothing is written before the window ends
    for _ in range(4):
        await rig.clock.advance(1.0)
        await asyncio.sleep(0.01)
    await wait_until(lambda: len(sub.committed) == 4, what="the commit")
    assert consumed(rig, A) == [1, 2, 3, 4]
    assert len(rig.written()) == 1
    rig.stop.set()
    await task


async def test_replay_dedup_reads_every_id_of_a_coalesced_copy() -> None:
    rig = rig_with_consumers(delivery=COALESCE)
    await rig.replayer.replay(deliveries(burst(A, 1, 3)), rig.stop)
    keys = await marker_keys(rig.server.client(), A, T0 - timedelta(days=1))
    assert keys == {("http://source:8080", i, "ns/sync") for i in (1, 2, 3)}


async def test_coalesce_parks_an_unknown_assets_events_one_by_one_and_writes_them_later() -> None:
    rig = Rig(assets=(B,), delivery=COALESCE)
    batch = deliveries([*burst(A, 1, 3), *burst(B, 4, 2)])
    assert await rig.replayer.replay(batch, rig.stop) == batch
    assert consumed(rig, B) == [4, 5]
    [parked] = rig.status.parked
    assert (parked.reason, [e.id for e in parked.events]) == ("unknownAsset", [1, 2, 3])
    rig.server.add_asset(A)
    await rig.clock.advance(1.0)
    await rig.replayer.tend(rig.stop)
    assert consumed(rig, A) == [1, 2, 3]  # in order, each once
    assert rig.status.parked == []
