"""Cursor correctness against fakes that behave like the 2.x and 3.x listing APIs."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.status import MAX_SEEN_IDS, Checkpoint
from airflow_asset_sync.clients.airflow.base import EventQuery
from airflow_asset_sync.worker.cursor import (
    Batch,
    Cursor,
    V1Cursor,
    V2Cursor,
    make_cursor,
    next_checkpoint,
    resolve_start,
)

from .fakes import T0, FakeAirflow, Version

OVERLAP = timedelta(seconds=5)
VERSIONS: list[Version] = ["v1", "v2"]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def drain(
    cursor: Cursor, checkpoint: Checkpoint, *, limit: int = 100
) -> tuple[list[SourceEvent], Checkpoint]:
    """Read until no more, handling everything: what a poller with no filter would do.

    Checks on the way that every batch is in delivery order.
    """
    delivered: list[SourceEvent] = []
    for _ in range(limit):
        batch = await cursor.read(checkpoint)
        assert_ascending(batch.events)
        delivered += batch.events
        checkpoint = next_checkpoint(checkpoint, batch=batch, handled=batch.events)
        if not batch.more:
            return delivered, checkpoint
    raise AssertionError("cursor never stopped reporting more")


def ids(events: list[SourceEvent]) -> list[int]:
    return [e.id for e in events]


def assert_ascending(events: list[SourceEvent]) -> None:
    keys = [e.sort_key for e in events]
    assert keys == sorted(keys)


# -- both versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_shared_timestamps_across_pages_all_delivered_once(version: Version) -> None:
    server = FakeAirflow(api_version=version, page_limit=10, seed=3)
    for i in range(47):
        server.emit(f"s3://b/{i}", at=at(i // 7))  # groups of 7 straddle pages of 10
    cursor = make_cursor(server.client())
    delivered, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    assert sorted(ids(delivered)) == list(range(1, 48))
    assert len(set(ids(delivered))) == 47
    assert_ascending(delivered)
    again, _ = await drain(cursor, checkpoint)
    assert again == []


@pytest.mark.parametrize("version", VERSIONS)
async def test_late_row_inside_overlap_is_delivered(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    for i in range(5):
        server.emit("s3://b/x", at=at(10 + i))
    cursor = make_cursor(server.client(), overlap=OVERLAP)
    _first, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    assert checkpoint.timestamp == at(14)
    # Commits after we read past it, with an earlier timestamp (a slow transaction).
    late = server.emit("s3://b/x", at=at(11.5))
    at_checkpoint = server.emit("s3://b/x", at=at(14))
    second, checkpoint = await drain(cursor, checkpoint)
    assert ids(second) == [late.id, at_checkpoint.id]
    third, _ = await drain(cursor, checkpoint)
    assert third == []


@pytest.mark.parametrize("version", VERSIONS)
async def test_overlap_is_configurable(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    server.emit("s3://b/x", at=at(100))
    cursor = make_cursor(server.client(), overlap=timedelta(seconds=30))
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    late = server.emit("s3://b/x", at=at(75))
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [late.id]


@pytest.mark.parametrize("version", VERSIONS)
async def test_server_cap_below_page_limit_does_not_end_the_walk(version: Version) -> None:
    # The client believes pages hold 100 rows; the server's maximum_page_limit is 40. Short
    # pages are then not the end of history (total_entries says so).
    server = FakeAirflow(api_version=version, page_limit=100, server_limit=40)
    for i in range(130):
        server.emit("s3://b/x", at=at(i * 0.01))
    delivered, _ = await drain(make_cursor(server.client()), Checkpoint(initialized=True))
    assert sorted(ids(delivered)) == list(range(1, 131))


@pytest.mark.parametrize("version", VERSIONS)
async def test_invalid_rows_are_reported_and_counted_as_rows(version: Version) -> None:
    server = FakeAirflow(api_version=version, page_limit=10)
    for i in range(25):
        server.emit("s3://b/x", at=at(i))
    server.invalid_ids = {4, 15}
    delivered, _ = await drain(make_cursor(server.client()), Checkpoint(initialized=True))
    # An invalid row must not make a page look short (that would end a 2.x walk early).
    assert sorted(ids(delivered)) == [i for i in range(1, 26) if i not in (4, 15)]
    batch = await make_cursor(server.client()).read(Checkpoint(initialized=True))
    assert sorted(int(getattr(exc, "event_id", -1)) for exc in batch.invalid) == [4, 15]


@pytest.mark.parametrize("version", VERSIONS)
async def test_saturated_seen_ids_do_not_republish_forever(version: Version) -> None:
    # More events inside one overlap window than seen_ids can hold.
    server = FakeAirflow(api_version=version)
    count = MAX_SEEN_IDS + 150
    for i in range(count):
        server.emit("s3://b/x", at=at(i * 0.001))  # all within 1.2 s
    cursor = make_cursor(server.client())
    delivered, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    assert sorted(ids(delivered)) == list(range(1, count + 1))
    assert len(checkpoint.seen_ids) == MAX_SEEN_IDS
    # The ids that fell off the capped set must not come back as new on every poll.
    for _ in range(2):
        again, checkpoint = await drain(cursor, checkpoint)
        assert again == []
    new = server.emit("s3://b/x", at=at(2))
    after, _ = await drain(cursor, checkpoint)
    assert ids(after) == [new.id]


# -- 3.x specifics ----------------------------------------------------------------------------


async def test_v2_queries_from_checkpoint_minus_overlap_ascending() -> None:
    server = FakeAirflow(api_version="v2")
    server.emit("s3://b/x", at=at(50))
    cursor = V2Cursor(server.client(), overlap=OVERLAP)
    await cursor.read(Checkpoint(timestamp=at(60), initialized=True))
    query = server.requests[-1][1]
    assert isinstance(query, EventQuery)
    assert query.timestamp_gte == at(55)
    assert query.ascending is True
    assert query.limit == server.page_limit


async def test_v2_skips_seen_ids_at_the_checkpoint_timestamp() -> None:
    server = FakeAirflow(api_version="v2")
    a = server.emit("s3://b/x", at=at(10))
    b = server.emit("s3://b/x", at=at(10))
    c = server.emit("s3://b/x", at=at(10))
    cursor = V2Cursor(server.client())
    batch = await cursor.read(Checkpoint(timestamp=at(10), seen_ids=[a.id], initialized=True))
    assert ids(batch.events) == [b.id, c.id]
    assert batch.reread == {a.id: at(10)}


async def test_v2_max_batch_sets_more_and_loses_nothing() -> None:
    server = FakeAirflow(api_version="v2", page_limit=10)
    for i in range(35):
        server.emit("s3://b/x", at=at(i * 0.01))
    cursor = V2Cursor(server.client(), max_batch=10)
    first = await cursor.read(Checkpoint(initialized=True))
    assert first.more is True
    assert len(first.events) >= 10
    delivered, _ = await drain(cursor, Checkpoint(initialized=True))
    assert ids(delivered) == list(range(1, 36))


async def test_v2_seen_window_larger_than_a_page_still_progresses() -> None:
    # 150 already-seen events at one timestamp fill more than a page; the read must page past
    # them instead of stopping on a page with nothing new.
    server = FakeAirflow(api_version="v2", page_limit=50)
    for _ in range(150):
        server.emit("s3://b/x", at=at(1))
    cursor = V2Cursor(server.client(), max_batch=50)
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    new = server.emit("s3://b/x", at=at(1.5))
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [new.id]


# -- 2.x specifics ----------------------------------------------------------------------------


async def test_v1_never_sends_a_time_filter_and_walks_descending() -> None:
    server = FakeAirflow(api_version="v1", page_limit=10)
    for i in range(30):
        server.emit("s3://b/x", at=at(i))
    await drain(V1Cursor(server.client()), Checkpoint(initialized=True))
    queries = [q for kind, q in server.requests if kind == "list_events"]
    assert queries
    assert all(q.timestamp_gte is None and q.ascending is False for q in queries)
    assert queries[0].offset == 0


async def test_v1_poll_reads_only_down_to_the_window() -> None:
    server = FakeAirflow(api_version="v1", page_limit=100)
    for i in range(1000):
        server.emit("s3://b/x", at=at(i))  # a long history, one event per second
    cursor = V1Cursor(server.client(), overlap=OVERLAP)
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    for i in range(3):
        server.emit("s3://b/x", at=at(1000 + i))
    server.requests.clear()
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [1001, 1002, 1003]
    # One page holds the new events, the window and rows older than it: the walk stops there.
    assert len(server.requests) == 1


async def test_v1_rereads_a_tie_group_split_by_a_page_boundary() -> None:
    # 8 distinct events, then 6 sharing one timestamp at positions 8..13 (page size 10): the
    # group straddles the boundary and each request orders it afresh.
    missed_without_check = 0
    for seed in range(20):
        events_total = 0
        for verify in (True, False):
            server = FakeAirflow(api_version="v1", page_limit=10, seed=seed)
            for _ in range(6):
                server.emit("s3://b/x", at=at(1))  # the tie group
            for i in range(8):
                server.emit("s3://b/x", at=at(10 - i * 0.1))
            for i in range(6):
                server.emit("s3://b/x", at=at(0.5 - i * 0.01))
            events_total = len(server.rows)
            cursor = V1Cursor(server.client(), max_group_rereads=4 if verify else 0)
            delivered, _ = await drain(cursor, Checkpoint(initialized=True))
            if verify:
                assert sorted(ids(delivered)) == list(range(1, events_total + 1)), seed
            elif len(set(ids(delivered))) < events_total:
                missed_without_check += 1
    # The fake really does reorder ties: without the group check the walk loses events.
    assert missed_without_check > 0


async def test_v1_tie_group_larger_than_a_page_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The documented limit: without a tie-breaker, 12 events with one timestamp cannot be
    # shown complete with pages of 10. The cursor must say so rather than stay silent.
    server = FakeAirflow(api_version="v1", page_limit=10, seed=1)
    for _ in range(5):
        server.emit("s3://b/x", at=at(2))
    for _ in range(12):
        server.emit("s3://b/x", at=at(1))
    with caplog.at_level("WARNING", logger="airflow_asset_sync.worker.cursor"):
        await V1Cursor(server.client()).read(Checkpoint(initialized=True))
    assert any("sharing a timestamp" in r.getMessage() for r in caplog.records)


async def test_v1_new_arrivals_during_the_walk_cause_no_gap() -> None:
    server = FakeAirflow(api_version="v1", page_limit=10)
    for i in range(60):
        server.emit("s3://b/x", at=at(i))
    arrivals = iter(range(100))

    def insert_two(query: EventQuery) -> None:
        n = next(arrivals)
        if n < 10:  # every request shifts the pages down by two rows
            server.emit("s3://b/x", at=at(100 + n))
            server.emit("s3://b/x", at=at(100 + n + 0.5))

    server.on_list = insert_two
    cursor = V1Cursor(server.client())
    delivered, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    server.on_list = None
    rest, _ = await drain(cursor, checkpoint)
    everything = ids(delivered) + ids(rest)
    assert sorted(everything) == list(range(1, len(server.rows) + 1))
    assert len(everything) == len(set(everything))


async def test_v1_long_history_is_caught_up_in_bounded_batches() -> None:
    server = FakeAirflow(api_version="v1", page_limit=50)
    for i in range(600):
        server.emit("s3://b/x", at=at(i * 0.5))
    cursor = V1Cursor(server.client(), max_batch=200)
    batch = await cursor.read(Checkpoint(initialized=True))
    assert batch.more is True
    assert len(batch.events) <= 250
    assert ids(batch.events) == list(range(1, len(batch.events) + 1))  # the oldest first
    delivered, _ = await drain(cursor, Checkpoint(initialized=True))
    assert ids(delivered) == list(range(1, 601))


async def test_v1_window_fuller_than_a_batch_still_ends() -> None:
    # More already-handled events inside the overlap window than one batch holds: the walk
    # must not keep returning that window (all seen) with `more` set, forever.
    server = FakeAirflow(api_version="v1", page_limit=10)
    for i in range(40):
        server.emit("s3://b/x", at=at(i * 0.1))  # all within 4 s
    cursor = V1Cursor(server.client(), max_batch=10)
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    batch = await cursor.read(checkpoint)
    assert (batch.events, batch.more) == ([], False)
    new = server.emit("s3://b/x", at=at(4.5))
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [new.id]


# -- startFrom --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_start_latest_skips_existing_including_the_window(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    for i in range(20):
        server.emit("s3://b/x", at=at(i * 0.5))  # the last 10 lie within 5 s of the newest
    cursor = make_cursor(server.client())
    checkpoint = await resolve_start(cursor, "latest")
    assert checkpoint.initialized is True
    assert checkpoint.timestamp == at(9.5)
    assert (await cursor.read(checkpoint)).events == []
    new = server.emit("s3://b/x", at=at(12))
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [new.id]


@pytest.mark.parametrize("version", VERSIONS)
async def test_start_latest_on_empty_history_delivers_everything_later(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    cursor = make_cursor(server.client())
    checkpoint = await resolve_start(cursor, "latest")
    assert checkpoint == Checkpoint(initialized=True)
    first = server.emit("s3://b/x", at=at(1))
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [first.id]


@pytest.mark.parametrize("version", VERSIONS)
async def test_start_earliest_delivers_history(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    for i in range(7):
        server.emit("s3://b/x", at=at(i * 100))
    cursor = make_cursor(server.client())
    checkpoint = await resolve_start(cursor, "earliest")
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == list(range(1, 8))


@pytest.mark.parametrize("version", VERSIONS)
async def test_start_from_time_delivers_events_at_or_after_it(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    server.emit("s3://b/x", at=at(90))  # before T - overlap
    server.emit("s3://b/x", at=at(97))  # inside the window before T: must not be delivered
    on_t = server.emit("s3://b/x", at=at(100))
    after = server.emit("s3://b/x", at=at(101))
    cursor = make_cursor(server.client())
    checkpoint = await resolve_start(cursor, at(100))
    assert checkpoint.timestamp == at(100)
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [on_t.id, after.id]


# -- next_checkpoint --------------------------------------------------------------------------


def ev(event_id: int, seconds: float) -> SourceEvent:
    return SourceEvent(id=event_id, uri="s3://b/x", timestamp=at(seconds))


def test_next_checkpoint_keeps_only_ids_in_the_window() -> None:
    handled = [ev(1, 0), ev(2, 6), ev(3, 10), ev(4, 10)]
    checkpoint = next_checkpoint(
        Checkpoint(initialized=True), batch=Batch(events=handled), handled=handled
    )
    assert checkpoint.timestamp == at(10)
    assert checkpoint.seen_ids == [2, 3, 4]
    assert checkpoint.initialized is True


def test_next_checkpoint_for_a_prefix_does_not_pass_the_rest() -> None:
    events = [ev(1, 1), ev(2, 2), ev(3, 2), ev(4, 3)]
    checkpoint = next_checkpoint(Checkpoint(), batch=Batch(events=events), handled=events[:2])
    assert checkpoint.timestamp == at(2)
    assert 3 not in checkpoint.seen_ids  # same timestamp, not handled: read again


def test_next_checkpoint_without_handled_events_is_unchanged() -> None:
    previous = Checkpoint(timestamp=at(5), seen_ids=[9], initialized=True)
    assert next_checkpoint(previous, batch=Batch(events=[ev(10, 6)]), handled=[]) is previous


def test_next_checkpoint_keeps_previous_ids_when_the_window_stays() -> None:
    previous = Checkpoint(timestamp=at(10), seen_ids=[1, 2], initialized=True)
    late = [ev(3, 8)]
    checkpoint = next_checkpoint(previous, batch=Batch(events=late), handled=late)
    assert checkpoint.timestamp == at(10)
    assert checkpoint.seen_ids == [1, 2, 3]


def test_next_checkpoint_caps_seen_ids_keeping_the_newest() -> None:
    handled = [ev(i, i * 0.001) for i in range(1, MAX_SEEN_IDS + 11)]
    checkpoint = next_checkpoint(Checkpoint(), batch=Batch(events=handled), handled=handled)
    assert len(checkpoint.seen_ids) == MAX_SEEN_IDS
    assert checkpoint.seen_ids[0] == 11
    assert checkpoint.seen_ids[-1] == MAX_SEEN_IDS + 10


# -- properties -------------------------------------------------------------------------------

# A run of polls over a source that keeps receiving events, many sharing timestamps, some
# committed late (up to 4 s behind the newest, inside the 5 s overlap). Every event must be
# delivered exactly once and each batch in order.
rounds = st.lists(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=12), st.booleans()), min_size=0, max_size=25
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    version=st.sampled_from(VERSIONS),
    page_limit=st.integers(min_value=4, max_value=12),
    seed=st.integers(min_value=0, max_value=10_000),
    plan=rounds,
)
async def test_property_every_event_exactly_once(
    version: Version, page_limit: int, seed: int, plan: list[list[tuple[int, bool]]]
) -> None:
    clock = 100.0
    schedule: list[list[datetime]] = []
    for round_events in plan:
        clock += 2
        # Steps of 0.25 s give ties; a late row lands 1 to 4 s in the past.
        schedule.append(
            [
                at(clock - 4 + step * 0.25 if late else clock + step * 0.25)
                for step, late in round_events
            ]
        )
        clock += 3.5
    if version == "v1":
        # Documented limit of 2.x (no tie-breaker): a group of equal timestamps is only
        # provably complete when it fits in one page with a neighbour on each side.
        sizes: dict[datetime, int] = {}
        for ts in (ts for round_ts in schedule for ts in round_ts):
            sizes[ts] = sizes.get(ts, 0) + 1
        assume(max(sizes.values(), default=0) <= page_limit - 2)

    server = FakeAirflow(api_version=version, page_limit=page_limit, seed=seed)
    cursor = make_cursor(server.client(), overlap=OVERLAP, max_batch=page_limit * 2)
    checkpoint = Checkpoint(initialized=True)
    delivered: list[int] = []
    for round_ts in schedule:
        for ts in round_ts:
            server.emit("s3://b/x", at=ts)
        events, checkpoint = await drain(cursor, checkpoint)
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(stamps)  # one drain never goes back in time
        delivered += ids(events)
    assert sorted(delivered) == [e.id for e in server.rows]


# -- settled_before: the part of the window that can no longer change ------------------------


def window_reads(server: FakeAirflow) -> list[datetime | None]:
    return [q.timestamp_gte for kind, q in server.requests if kind == "list_events"]


async def test_v2_reads_after_the_window_settled_start_at_the_checkpoint() -> None:
    # A burst of 300 events within 3 s, then quiet. Without a server Date every poll re-reads
    # the window: 3 pages. Once the source's clock is past the window, one page from the
    # checkpoint on.
    server = FakeAirflow(api_version="v2")
    for i in range(300):
        server.emit("s3://b/x", at=at(i * 0.01))
    cursor = make_cursor(server.client())
    server.clock = at(3.5)  # the burst has just ended
    delivered, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    assert len(delivered) == 300
    assert checkpoint.settled_before == at(3) - OVERLAP - timedelta(seconds=1)
    server.clock = at(20)  # quiet for a while
    _, checkpoint = await drain(cursor, checkpoint)
    assert checkpoint.settled_before == checkpoint.timestamp == at(2.99)
    server.requests.clear()
    batch = await cursor.read(checkpoint)
    assert batch.events == []
    assert window_reads(server) == [at(2.99)]  # one request, not the 5 s window


async def test_settled_bound_never_passes_a_late_row_that_could_still_commit() -> None:
    server = FakeAirflow(api_version="v2")
    server.emit("s3://b/x", at=at(10))
    cursor = make_cursor(server.client())
    server.clock = at(10.2)
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    # A transaction that began at 8 s commits now, 2 s after the read: within the overlap of
    # the read's own time, so it must still be found.
    late = server.emit("s3://b/x", at=at(8))
    server.clock = at(10.6)
    delivered, checkpoint = await drain(cursor, checkpoint)
    assert ids(delivered) == [late.id]


@pytest.mark.parametrize("version", VERSIONS)
async def test_settled_bound_stops_before_late_rows_not_handled_yet(version: Version) -> None:
    # Two late rows below the checkpoint, and only the first is handled (a publish chunk of
    # one): the bound must not move past the second.
    server = FakeAirflow(api_version=version)
    server.emit("s3://b/x", at=at(10))
    cursor = make_cursor(server.client())
    server.clock = at(10)
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    first = server.emit("s3://b/x", at=at(6))
    second = server.emit("s3://b/x", at=at(7))
    # Read at 14 s: on its own that would settle everything before 8 s (14 - 5 - 1).
    server.clock = at(14)
    batch = await cursor.read(checkpoint)
    assert ids(batch.events) == [first.id, second.id]
    checkpoint = next_checkpoint(checkpoint, batch=batch, handled=batch.events[:1])
    assert checkpoint.settled_before is not None and checkpoint.settled_before <= at(7)
    delivered, _ = await drain(cursor, checkpoint)
    assert ids(delivered) == [second.id]


@pytest.mark.parametrize("version", VERSIONS)
async def test_invalid_rows_hold_the_settled_bound(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    server.emit("s3://b/x", at=at(10))
    bad = server.emit("s3://b/x", at=at(10.5))
    server.invalid_ids.add(bad.id)
    cursor = make_cursor(server.client())
    server.clock = at(60)
    previous = Checkpoint(initialized=True, timestamp=at(9))
    batch = await cursor.read(previous)
    assert batch.invalid
    checkpoint = next_checkpoint(previous, batch=batch, handled=batch.events)
    assert checkpoint.settled_before is None  # the invalid row is retried from the window


@pytest.mark.parametrize("version", VERSIONS)
async def test_without_a_date_the_whole_window_is_reread(version: Version) -> None:
    server = FakeAirflow(api_version=version)
    for i in range(5):
        server.emit("s3://b/x", at=at(i))
    cursor = make_cursor(server.client())
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    assert checkpoint.settled_before is None
    if version == "v2":
        server.requests.clear()
        await cursor.read(checkpoint)
        assert window_reads(server) == [at(4) - OVERLAP]


async def test_settled_bound_only_moves_forward() -> None:
    server = FakeAirflow(api_version="v2")
    server.emit("s3://b/x", at=at(100))
    cursor = make_cursor(server.client())
    server.clock = at(200)
    _, checkpoint = await drain(cursor, Checkpoint(initialized=True))
    assert checkpoint.settled_before == at(100)
    server.clock = at(50)  # a server clock set back: ignored
    server.emit("s3://b/x", at=at(101))
    _, after = await drain(cursor, checkpoint)
    assert after.settled_before is not None and after.settled_before >= at(100)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(VERSIONS),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=3.0),  # seconds the clock moves before the step
            st.integers(min_value=0, max_value=30),  # events emitted
            st.floats(min_value=0.0, max_value=4.9),  # how far behind the clock they are stamped
        ),
        min_size=1,
        max_size=12,
    ),
    restart_at=st.integers(min_value=0, max_value=12),
)
async def test_property_late_rows_within_the_overlap_are_delivered_exactly_once(
    version: Version, steps: list[tuple[float, int, float]], restart_at: int
) -> None:
    """Rows committed late (stamped up to `overlap` before the server's clock at commit),
    reads in between, a restart (a fresh cursor over the saved checkpoint) somewhere: every
    event exactly once, with the settled bound in play."""
    server = FakeAirflow(api_version=version, page_limit=20, seed=len(steps))
    clock = at(100)
    server.clock = clock
    cursor = make_cursor(server.client())
    checkpoint = Checkpoint(initialized=True)
    delivered: list[SourceEvent] = []
    for index, (advance, count, behind) in enumerate(steps):
        clock += timedelta(seconds=advance)
        server.clock = clock
        for i in range(count):  # distinct stamps: 2.x tie groups beyond a page are a known limit
            server.emit("s3://b/x", at=clock - timedelta(seconds=behind, milliseconds=i))
        if index == restart_at:
            cursor = make_cursor(server.client())
        got, checkpoint = await drain(cursor, checkpoint)
        delivered += got
    server.clock = clock + timedelta(seconds=10)
    got, _ = await drain(cursor, checkpoint)
    delivered += got
    assert sorted(ids(delivered)) == sorted(e.id for e in server.rows)
    assert len(set(ids(delivered))) == len(delivered)


# -- v2 catch-up: pages requested in waves -----------------------------------------------------


async def test_v2_backlog_pages_are_requested_several_at_once() -> None:
    server = FakeAirflow(api_version="v2", page_limit=100)
    for i in range(2500):
        server.emit("s3://b/x", at=at(i * 0.01))
    cursor = V2Cursor(server.client(), max_batch=1000, prefetch=4)
    delivered, _ = await drain(cursor, Checkpoint(initialized=True))
    assert ids(delivered) == [e.id for e in server.rows]
    assert server.max_listing == 4


async def test_v2_waves_survive_rows_inserted_mid_walk_and_a_lower_server_cap() -> None:
    # The server caps pages at 40 while the client asks for 100, and new rows arrive during
    # the walk: every event once, in order.
    server = FakeAirflow(api_version="v2", page_limit=100, server_limit=40)
    for i in range(700):
        server.emit("s3://b/x", at=at(i * 0.001))
    clock = [1.0]

    def insert(query: EventQuery) -> None:
        clock[0] += 0.001
        server.emit("s3://b/x", at=at(clock[0]))

    server.on_list = insert
    cursor = V2Cursor(server.client(), max_batch=300, prefetch=4)
    delivered, _ = await drain(cursor, Checkpoint(initialized=True))
    server.on_list = None
    rest, _ = await drain(cursor, Checkpoint(initialized=True, timestamp=delivered[-1].timestamp))
    assert sorted(set(ids(delivered + rest))) == [e.id for e in server.rows]
    assert len(ids(delivered)) == len(set(ids(delivered)))
    assert server.max_listing == 1  # short pages: never a wave


def test_v2_prefetch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="prefetch must be at least 1, got 0"):
        V2Cursor(FakeAirflow(api_version="v2").client(), prefetch=0)
