"""The poller: publish before checkpoint, loop prevention, filters, invalid rows, cadence."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from airflow_asset_sync.api.events import MARKER_KEY
from airflow_asset_sync.api.spec import AssetFilter, StartFrom
from airflow_asset_sync.api.status import Checkpoint, SourceStatus
from airflow_asset_sync.clients.airflow.base import InvalidRow, Unavailable
from airflow_asset_sync.worker.cursor import make_cursor
from airflow_asset_sync.worker.metrics import WorkerMetrics
from airflow_asset_sync.worker.poller import Poller, PollPace, PollResult, PollSettings

from .fakes import T0, FakeAirflow, FakeClock, FakePublisher, MemoryStore, Version, wait_until

ORIGIN = "http://source:8080"
SYNC = "team-a/orders"


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


class Rig:
    """A poller wired to fakes."""

    def __init__(
        self,
        *,
        version: Version = "v2",
        start_from: StartFrom = "earliest",
        assets: dict[str, Any] | None = None,
        status: SourceStatus | None = None,
        max_batch: int | None = None,
        page_limit: int = 100,
        server: FakeAirflow | None = None,
        publisher: FakePublisher | None = None,
        store: MemoryStore | None = None,
        max_publish: int = 100,
        wake: asyncio.Event | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.server = server or FakeAirflow(api_version=version, page_limit=page_limit)
        self.publisher = publisher or FakePublisher()
        self.store = store or MemoryStore()
        self.clock = FakeClock()
        self.metrics = WorkerMetrics()
        self.poller = Poller(
            settings=PollSettings(
                sync=SYNC,
                origin=ORIGIN,
                assets=AssetFilter.model_validate(assets or {}),
                start_from=start_from,
                poll_interval_s=poll_interval,
                max_publish=max_publish,
            ),
            cursor=make_cursor(self.server.client(), max_batch=max_batch),
            publisher=self.publisher,
            store=self.store,
            status=status or SourceStatus(),
            clock=self.clock,
            metrics=self.metrics,
            wake=wake,
        )

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.value(f"aas_{name}_total", labels)


async def test_publishes_envelopes_then_saves_the_checkpoint() -> None:
    rig = Rig()
    events = [rig.server.emit("s3://b/x", at=at(i)) for i in range(3)]
    published_at_save: list[list[int]] = []
    rig.store.on_save_source = lambda s: published_at_save.append(list(rig.publisher.ids))

    result = await rig.poller.poll_once()

    assert result.published == 3
    assert rig.publisher.ids == [e.id for e in events]
    envelope = rig.publisher.published[0]
    assert (envelope.sync, envelope.origin, envelope.event) == (SYNC, ORIGIN, events[0])
    saved = rig.store.source_saves[-1]
    assert saved.checkpoint.timestamp == events[-1].timestamp
    assert saved.events_published == 3
    # Every checkpoint save happened after the events it covers were published.
    assert published_at_save[-1] == [e.id for e in events]


async def test_checkpoint_never_passes_an_event_the_publisher_did_not_take() -> None:
    rig = Rig()
    for i in range(3):
        rig.server.emit("s3://b/x", at=at(i))
    rig.publisher.failures.append(RuntimeError("broker down"))

    with pytest.raises(RuntimeError, match="broker down"):
        await rig.poller.poll_once()

    # Only the start position was saved; no checkpoint covers the unpublished events.
    assert all(s.checkpoint.timestamp is None for s in rig.store.source_saves)
    assert rig.poller.status.checkpoint.timestamp is None
    assert rig.poller.status.events_published == 0

    await rig.poller.poll_once()  # broker back: the same events are read and published
    assert rig.publisher.ids == [1, 2, 3]
    assert rig.store.source_saves[-1].checkpoint.timestamp == at(2)


class FailsOnce(FakePublisher):
    """Fails its `nth` publish (counting from 1), once."""

    def __init__(self, nth: int) -> None:
        super().__init__()
        self.calls = 0
        self.nth = nth

    async def publish(self, envelopes: Any) -> None:
        self.calls += 1
        if self.calls == self.nth:
            raise RuntimeError("broker down")
        await super().publish(envelopes)


async def test_publishes_in_bounded_chunks_each_followed_by_its_checkpoint() -> None:
    """After a crash, what was published but not checkpointed is read and published again;
    the in-process channel cannot filter it, and a replayer checks only its first
    `commit_batch` deliveries after a start against the target. So no publish is larger
    than that window, and each is checkpointed before the next (the reliability suite's
    SIGKILL test duplicated 106 of 2,000 events when a poll batch went out whole)."""
    publisher = FailsOnce(3)
    rig = Rig(max_publish=3, publisher=publisher)
    for i in range(8):
        rig.server.emit("s3://b/x", at=at(i), extra={MARKER_KEY: {}} if i == 4 else None)
    saved_after: list[list[int]] = []
    rig.store.on_save_source = lambda s: saved_after.append(list(rig.publisher.ids))

    with pytest.raises(RuntimeError, match="broker down"):
        await rig.poller.poll_once()

    # Two chunks of three went out (event 5 is a synced copy: passed, never published), each
    # checkpointed before the next publish; the third failed and left no trace.
    assert [[e.event.id for e in b] for b in rig.publisher.batches] == [[1, 2, 3], [4, 6, 7]]
    assert saved_after[1:] == [[1, 2, 3], [1, 2, 3, 4, 6, 7]]
    assert rig.store.source_saves[-1].checkpoint.timestamp == at(6)
    assert rig.poller.status.events_published == 6
    assert rig.metric("events_published") == 6
    assert rig.metric("events_filtered", reason="synced") == 1

    result = await rig.poller.poll_once()
    assert result.published == 1
    assert rig.publisher.ids == [1, 2, 3, 4, 6, 7, 8]
    assert rig.store.source_saves[-1].checkpoint.timestamp == at(7)


async def test_run_backs_off_after_a_failed_publish_and_recovers() -> None:
    rig = Rig()
    rig.server.emit("s3://b/x", at=at(1))
    rig.publisher.failures.append(RuntimeError("broker down"))
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: bool(rig.clock.sleeping), what="back-off sleep")
    assert rig.publisher.ids == []
    assert rig.poller.status.last_error == "RuntimeError: broker down"
    assert rig.metrics.value("aas_poll_errors_total", {"kind": "RuntimeError"}) == 1
    await rig.clock.advance(rig.clock.sleeping[0])
    await wait_until(lambda: rig.publisher.ids == [1], what="publish after recovery")
    assert rig.poller.status.last_error is None
    stop.set()
    await task


@pytest.mark.parametrize("marker_origin", [ORIGIN, "http://elsewhere:8080"])
async def test_events_written_by_a_sync_are_never_forwarded(marker_origin: str) -> None:
    rig = Rig()
    mine = rig.server.emit("s3://b/x", at=at(1))
    marker = {"origin": marker_origin, "event_id": 7, "timestamp": T0.isoformat(), "sync": "x/y"}
    rig.server.emit("s3://b/x", at=at(2), extra={MARKER_KEY: marker, "from_rest_api": True})
    after = rig.server.emit("s3://b/x", at=at(3))

    result = await rig.poller.poll_once()

    assert rig.publisher.ids == [mine.id, after.id]
    assert result.looped == 1
    assert rig.metric("events_filtered", reason="synced") == 1
    assert rig.poller.status.checkpoint.timestamp == at(3)  # passed it, not stuck on it


async def test_filtered_events_are_counted_and_passed() -> None:
    rig = Rig(assets={"include": [{"glob": "s3://sales/*"}], "exclude": [{"glob": "*tmp*"}]})
    kept = rig.server.emit("s3://sales/orders", at=at(1))
    rig.server.emit("s3://hr/people", at=at(2))
    rig.server.emit("s3://sales/tmp", at=at(3))

    await rig.poller.poll_once()

    assert rig.publisher.ids == [kept.id]
    assert rig.poller.status.events_filtered == 2
    assert rig.metric("events_filtered", reason="filter") == 2
    assert rig.poller.status.checkpoint.timestamp == at(3)
    await rig.poller.poll_once()
    assert rig.publisher.ids == [kept.id]  # not re-read as new


async def test_events_already_in_the_transport_are_not_published_again() -> None:
    rig = Rig()
    for i in range(4):
        rig.server.emit("s3://b/x", at=at(i))
    rig.publisher.keys = {1, 2}  # published before a crash, checkpoint not saved
    await rig.poller.poll_once()
    assert rig.publisher.ids == [3, 4]
    assert rig.metric("events_filtered", reason="already_published") == 2
    assert rig.poller.status.checkpoint.timestamp == at(3)


async def test_start_position_is_saved_before_anything_is_published() -> None:
    rig = Rig(start_from="latest")
    rig.server.emit("s3://b/x", at=at(1))
    rig.server.emit("s3://b/x", at=at(2))
    await rig.poller.poll_once()
    first = rig.store.source_saves[0]
    assert first.checkpoint.initialized is True
    assert first.checkpoint.timestamp == at(2)
    assert rig.publisher.ids == []


async def test_restart_resumes_from_the_checkpoint_not_from_latest_again() -> None:
    server = FakeAirflow(api_version="v2")
    store = MemoryStore()
    server.emit("s3://b/x", at=at(1))
    first = Rig(start_from="latest", server=server, store=store)
    await first.poller.poll_once()
    # The worker is down while these arrive; "latest" must not be resolved again.
    missed = [server.emit("s3://b/x", at=at(10 + i)) for i in range(2)]
    loaded = await store.load()
    second = Rig(start_from="latest", server=server, store=store, status=loaded.source)
    await second.poller.poll_once()
    assert second.publisher.ids == [e.id for e in missed]


async def test_full_batches_are_followed_by_an_immediate_repoll() -> None:
    rig = Rig(max_batch=100, page_limit=100)
    for i in range(250):
        rig.server.emit("s3://b/x", at=at(i * 0.01))
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: bool(rig.clock.sleeping), what="the poller to sleep")
    # All 250 went out in three batches before the first pause (at the active pace, since
    # events just came).
    assert [len(b) for b in rig.publisher.batches] == [100, 100, 50]
    assert [s for s in rig.clock.sleep_calls if s > 0] == [0.2]
    stop.set()
    await task


async def test_idle_poller_sleeps_the_poll_interval_between_polls() -> None:
    rig = Rig()
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: rig.clock.sleeping == [1.0], what="first sleep")
    polls = len([r for r in rig.server.requests if r[0] == "list_events"])
    event = rig.server.emit("s3://b/x", at=at(5))
    await asyncio.sleep(0)
    assert rig.publisher.ids == []  # not before the interval elapsed
    await rig.clock.advance(1.0)
    await wait_until(lambda: rig.publisher.ids == [event.id], what="publish")
    assert len([r for r in rig.server.requests if r[0] == "list_events"]) > polls
    assert rig.metrics.value("aas_last_successful_poll_timestamp_seconds") == pytest.approx(
        rig.clock.now().timestamp()
    )
    stop.set()
    await task


async def test_stop_lets_a_publish_in_flight_finish_and_checkpoint() -> None:
    rig = Rig()
    rig.server.emit("s3://b/x", at=at(1))
    rig.publisher.gate = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: rig.publisher.publishing, what="publish in flight")
    stop.set()
    await asyncio.sleep(0)
    assert not task.done()
    rig.publisher.gate.set()
    await task
    assert rig.publisher.ids == [1]
    assert rig.store.source_saves[-1].checkpoint.timestamp == at(1)
    polls = len([r for r in rig.server.requests if r[0] == "list_events"])
    await rig.clock.advance(5)
    assert len([r for r in rig.server.requests if r[0] == "list_events"]) == polls


async def test_source_errors_are_retried_with_backoff() -> None:
    rig = Rig()
    rig.server.emit("s3://b/x", at=at(1))
    rig.server.list_failures.extend([Unavailable("503"), Unavailable("503")])
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: bool(rig.clock.sleeping), what="first back-off")
    first = rig.clock.sleeping[0]
    await rig.clock.advance(first)
    await wait_until(lambda: len(rig.clock.sleep_calls) >= 2, what="second back-off")
    second = rig.clock.sleep_calls[1]
    assert second > first  # exponential
    await rig.clock.advance(second)
    await wait_until(lambda: rig.publisher.ids == [1], what="publish after recovery")
    stop.set()
    await task


# -- invalid rows -----------------------------------------------------------------------------


async def test_invalid_row_with_position_holds_the_checkpoint_below_it_then_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    rig.server.invalid_mode = "positioned"
    before = rig.server.emit("s3://b/x", at=at(1))
    bad = rig.server.emit("s3://b/x", at=at(2))
    after = rig.server.emit("s3://b/x", at=at(3))
    rig.server.invalid_ids = {bad.id}

    for attempt in range(3):
        result = await rig.poller.poll_once()
        assert rig.publisher.ids == [before.id]  # nothing past the bad row
        assert rig.poller.status.checkpoint.timestamp == at(1)
        assert result.held == 1, attempt
    assert rig.poller.status.events_invalid == 0

    with caplog.at_level("ERROR", logger="airflow_asset_sync.worker.poller"):
        await rig.poller.poll_once()
    assert rig.publisher.ids == [before.id, after.id]
    assert rig.poller.status.events_invalid == 1
    assert rig.metric("events_invalid") == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [getattr(r, "event_id", None) for r in errors] == [bad.id]

    await rig.poller.poll_once()  # re-read in the window: not counted twice
    assert rig.poller.status.events_invalid == 1


async def test_invalid_row_without_position_holds_the_whole_batch() -> None:
    rig = Rig()
    rig.server.invalid_mode = "anonymous"
    rig.server.emit("s3://b/x", at=at(1))
    bad = rig.server.emit("s3://b/x", at=at(2))
    rig.server.emit("s3://b/x", at=at(3))
    rig.server.invalid_ids = {bad.id}
    for _ in range(3):
        await rig.poller.poll_once()
        assert rig.publisher.ids == []
    await rig.poller.poll_once()
    assert rig.publisher.ids == [1, 3]
    assert rig.poller.status.events_invalid == 1


async def test_an_invalid_row_with_a_position_holds_back_only_what_follows_it() -> None:
    """A client that attaches the row's timestamp too (ours do not: `wire.parse_event` says
    why): rows before it flow at once, rows after it wait below it."""
    rig = Rig(version="v2")
    rig.server.invalid_mode = "positioned"
    before = rig.server.emit("s3://b/x", at=at(0))
    bad = rig.server.emit("s3://b/x", at=at(1))
    rig.server.invalid_ids = {bad.id}
    after = [rig.server.emit("s3://b/x", at=at(2)).id]
    await rig.poller.poll_once()
    assert rig.publisher.ids == [before.id]
    for i in range(2):
        after.append(rig.server.emit("s3://b/x", at=at(3 + i)).id)
        await rig.poller.poll_once()
        assert rig.publisher.ids == [before.id]
    await rig.poller.poll_once()
    assert rig.publisher.ids == [before.id, *after]
    assert rig.poller.status.events_invalid == 1


async def test_the_real_client_reports_an_invalid_row_as_data() -> None:
    from airflow_asset_sync.clients.airflow.wire import parse_event_page

    good = {"id": 7, "uri": "s3://b/x", "extra": {}, "timestamp": "2026-01-01T00:00:05+00:00"}
    bad = {**good, "id": 8, "uri": 42}
    shapeless = {"id": "x", "timestamp": 3}
    page = parse_event_page(
        {"asset_events": [good, bad, shapeless], "total_entries": 3}, schema="v2", where="GET /e"
    )
    assert [e.id for e in page.events] == [7]
    first, second = page.invalid
    assert isinstance(first, InvalidRow) and isinstance(second, InvalidRow)
    assert (first.event_id, first.timestamp) == (8, None)
    assert first.problem.startswith("GET /e: field 'uri' ")
    assert "row" not in first.problem, "the row index moves; the identity must not carry it"
    assert (second.event_id, second.timestamp) == (None, None)


async def test_invalid_row_that_heals_is_delivered() -> None:
    rig = Rig()
    rig.server.invalid_mode = "positioned"
    bad = rig.server.emit("s3://b/x", at=at(1))
    rig.server.invalid_ids = {bad.id}
    await rig.poller.poll_once()
    assert rig.publisher.ids == []
    rig.server.invalid_ids = set()  # a transient bad response
    await rig.poller.poll_once()
    assert rig.publisher.ids == [bad.id]
    assert rig.poller.status.events_invalid == 0


async def test_checkpoint_in_status_is_initialized_only_once() -> None:
    status = SourceStatus(checkpoint=Checkpoint(timestamp=at(5), initialized=True))
    rig = Rig(start_from="latest", status=status)
    rig.server.emit("s3://b/x", at=at(6))
    rig.server.emit("s3://b/x", at=at(7))
    await rig.poller.poll_once()
    assert rig.publisher.ids == [1, 2]  # latest would have skipped both


# -- pace: fast while events flow, pollInterval when quiet ---------------------------------


def result(read: int = 0, more: bool = False) -> PollResult:
    return PollResult(
        read=read, published=read, filtered=0, looped=0, already_published=0, held=0, more=more
    )


def test_pace_is_the_poll_interval_while_nothing_happens() -> None:
    pace = PollPace(1.0)
    assert [pace.after(result(), now) for now in (0.0, 1.0, 2.0)] == [1.0, 1.0, 1.0]


def test_pace_speeds_up_after_new_events_and_falls_back_after_the_hold() -> None:
    pace = PollPace(1.0)
    assert pace.after(result(read=3), 0.0) == pytest.approx(0.2)
    assert pace.after(result(), 9.9) == pytest.approx(0.2)  # still within 10 s of the event
    assert pace.after(result(), 10.0) == 1.0


def test_pace_rereads_at_once_when_a_read_was_cut_at_its_size_bound() -> None:
    assert PollPace(1.0).after(result(read=1000, more=True), 0.0) == 0.0


def test_pace_scales_with_the_interval_and_never_polls_faster_than_100ms() -> None:
    slow = PollPace(60.0)
    assert slow.after(result(read=1), 0.0) == 12.0
    assert slow.hold == 120.0  # at least two idle intervals
    fast = PollPace(0.2)
    assert fast.after(result(read=1), 0.0) == pytest.approx(0.1)


async def test_running_poller_speeds_up_after_an_event_and_slows_down_when_quiet() -> None:
    rig = Rig()
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: rig.clock.sleeping == [1.0], what="idle pace")
    rig.server.emit("s3://b/x", at=at(5))
    await rig.clock.advance(1.0)
    await wait_until(lambda: rig.clock.sleeping == [pytest.approx(0.2)], what="active pace")
    fast_polls = 0
    while rig.clock.sleeping == [pytest.approx(0.2)] and fast_polls < 100:
        await rig.clock.advance(0.2)
        fast_polls += 1
        await wait_until(lambda: bool(rig.clock.sleeping), what="a sleep")
    assert rig.clock.sleeping == [pytest.approx(1.0)]
    assert 49 <= fast_polls <= 51  # 10 s of quiet at the active pace, then idle again
    stop.set()
    await task


async def test_idle_polls_settle_the_window_and_save_it() -> None:
    # After a burst the checkpoint's window is re-read until the source's clock has passed
    # it; from then on each poll reads from the checkpoint only, and the bound is persisted
    # so a restart does not go back to re-reading the window.
    rig = Rig()
    for i in range(250):
        rig.server.emit("s3://b/x", at=at(i * 0.01))
    rig.server.clock = at(3)
    await rig.poller.poll_once()
    first = rig.store.status.source.checkpoint
    assert first.settled_before is not None and first.timestamp is not None
    assert first.settled_before < first.timestamp
    rig.server.clock = at(30)
    await rig.poller.poll_once()  # nothing new, but the window is now settled
    saved = rig.store.status.source
    assert saved.checkpoint.settled_before == saved.checkpoint.timestamp == at(2.49)
    rig.server.requests.clear()
    await rig.poller.poll_once()
    assert [q.timestamp_gte for _, q in rig.server.requests] == [at(2.49)]
    assert rig.publisher.ids == sorted(e.id for e in rig.server.rows)
