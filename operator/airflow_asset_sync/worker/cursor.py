"""Reading "the source events that are new since the checkpoint".

The checkpoint (`api.status.Checkpoint`) is a timestamp plus the ids already handled in the
*overlap window* behind it. An event counts as handled when it is older than
``checkpoint.timestamp - overlap`` (or than ``settled_before``, below), or its id is in
``seen_ids``. Every read re-reads the window and drops the ids it has seen.

Why an overlap window: a row's timestamp is taken when its transaction starts, but the row
becomes visible when the transaction commits. A slow transaction can therefore commit a row
with a timestamp *earlier* than rows we have already read. Re-reading a few seconds behind the
checkpoint (default 5 s) catches such late rows; the ids stop the others being sent twice.

Only the recent part of the window can still change: a row that is not visible yet carries a
timestamp within `overlap` of the moment it is read. So once a read has seen the source at
server time D (its HTTP ``Date``), everything older than ``D - overlap`` was complete then,
and the checkpoint records that as ``settled_before``; later reads start there instead of at
``timestamp - overlap``. Without it, a source quiet after a burst cost one page per 100
window events on every poll for good (3.2 requests/s measured), and a catch-up re-read half
a page per 100 new events. `SKEW` covers clocks of the hosts that stamp rows (scheduler,
workers) running up to a second behind the API server's. A ``Date`` that lags the true time
(uvicorn, serving Airflow 3, refreshes its cached one once a second: seen 1.7 s behind) only
makes the bound more conservative; one that runs ahead would not, hence the margin.

Two strategies, because the two event listings differ (`/api/v2/assets/events` filters by
time; `/api/v1/datasets/events` neither filters by time nor sorts by id):

- `V2Cursor` (Airflow 3.x): ``timestamp_gte`` filter, ascending, with the server appending the
  id as tie-breaker, so a page walk is stable.
- `V1Cursor` (Airflow 2.x): no time filter, no ordering by id, no tie-breaker. It walks
  ``order_by=-timestamp`` from the newest event down to the window; see its docstring.

Both return a `Batch`: the new events ascending by ``(timestamp, id)``, which is the order the
poller publishes and checkpoints in. `next_checkpoint` computes the checkpoint after a batch
(or a prefix of it) was handled; `resolve_start` turns `startFrom` into the first checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.spec import StartFrom
from airflow_asset_sync.api.status import MAX_SEEN_IDS, Checkpoint
from airflow_asset_sync.clients.airflow.base import AirflowClient, BadResponse, EventQuery

log = logging.getLogger(__name__)

#: How far behind the checkpoint each read looks again for rows that committed late.
DEFAULT_OVERLAP = timedelta(seconds=5)

#: Margin for the clocks that stamp rows running behind the API server's ``Date``.
SKEW = timedelta(seconds=1)


@dataclass(frozen=True)
class Batch:
    """The result of one read.

    ``events``: new events, ascending by ``(timestamp, id)``, each id once.
    ``reread``: id -> timestamp of already-handled events met again in the window; the next
    checkpoint needs their timestamps to decide which ids stay in ``seen_ids``.
    ``invalid``: rows the server returned that failed validation (never dropped silently).
    ``more``: the read stopped at its size bound, so more new events are probably waiting and
    the poller should read again at once instead of sleeping.
    """

    events: list[SourceEvent]
    reread: dict[int, datetime] = field(default_factory=dict)
    invalid: list[BadResponse] = field(default_factory=list)
    more: bool = False
    #: The earliest server time among the read's responses (None if one lacked it): rows
    #: older than ``server_time - overlap`` were all visible when this read ran.
    server_time: datetime | None = None


class Cursor(Protocol):
    async def read(self, checkpoint: Checkpoint) -> Batch: ...

    async def newest(self) -> SourceEvent | None:
        """The newest existing event, or None for an empty history."""
        ...

    async def oldest(self) -> SourceEvent | None:
        """The oldest existing event, or None for an empty history (gap detection)."""
        ...


def _lower_bound(checkpoint: Checkpoint, overlap: timedelta) -> datetime | None:
    """Where a read starts: the overlap window behind the checkpoint, minus its settled part."""
    if checkpoint.timestamp is None:
        return None
    lower = checkpoint.timestamp - overlap
    settled = checkpoint.settled_before
    if settled is not None:
        lower = max(lower, min(settled, checkpoint.timestamp))
    return lower


def _earliest(times: Iterable[datetime | None]) -> datetime | None:
    """The earliest time, or None if any is unknown (one answer without a ``Date``)."""
    earliest: datetime | None = None
    for t in times:
        if t is None:
            return None
        earliest = t if earliest is None else min(earliest, t)
    return earliest


def _select(
    collected: Iterable[SourceEvent], checkpoint: Checkpoint, lower: datetime | None
) -> tuple[list[SourceEvent], dict[int, datetime]]:
    """Split what a read collected into new events and re-read ones.

    Duplicates within a read (offset paging while rows are inserted) collapse by id.

    Saturation: `seen_ids` is capped at MAX_SEEN_IDS. When more events than that fall in one
    overlap window, `next_checkpoint` keeps the newest ones by ``(timestamp, id)``; the
    dropped ones are older than every kept one. Without care they would look new on every
    read and be published again forever. So when the set is full, unseen events that sort
    before the oldest seen event met in this read are treated as handled. The cost, stated:
    at more than MAX_SEEN_IDS events per window, a late row older than that point is missed.
    """
    by_id: dict[int, SourceEvent] = {}
    for event in collected:
        if lower is not None and event.timestamp < lower:
            continue
        by_id.setdefault(event.id, event)
    seen = set(checkpoint.seen_ids)
    reread = {i: e.timestamp for i, e in by_id.items() if i in seen}
    floor: tuple[datetime, int] | None = None
    if len(seen) >= MAX_SEEN_IDS and reread:
        floor = min(by_id[i].sort_key for i in reread)
    new: list[SourceEvent] = []
    for event in sorted(by_id.values(), key=lambda e: e.sort_key):
        if event.id in seen:
            continue
        if floor is not None and event.sort_key < floor:
            reread[event.id] = event.timestamp
            continue
        new.append(event)
    return new, reread


def _history_ends(rows: int, total: int | None, offset: int, limit: int) -> bool:
    """Whether a page is the last one.

    ``total_entries`` is trusted when present: a server whose ``maximum_page_limit`` is below
    our page size returns short pages that are not the end, and taking a short page for the
    end would make the 2.x walk stop before the window and lose events.
    """
    if rows == 0:
        return True
    if total is not None:
        return offset + rows >= total
    return rows < limit


async def _newest(client: AirflowClient) -> SourceEvent | None:
    """First valid event in descending order (skipping invalid rows at the top)."""
    return await _end(client, ascending=False)


async def _oldest(client: AirflowClient) -> SourceEvent | None:
    """First valid event in ascending order (skipping invalid rows at the bottom)."""
    return await _end(client, ascending=True)


async def _end(client: AirflowClient, *, ascending: bool) -> SourceEvent | None:
    offset = 0
    limit = client.page_limit
    while True:
        page = await client.list_events(EventQuery(limit=limit, offset=offset, ascending=ascending))
        if page.events:
            pick = min if ascending else max
            return pick(page.events, key=lambda e: e.sort_key)
        rows = len(page.invalid)
        if _history_ends(rows, page.total_entries, offset, limit):
            return None
        offset += rows


class V2Cursor:
    """Airflow 3.x: ``timestamp_gte = checkpoint - overlap``, ascending, id tie-breaker.

    Pages are read while they are full, until `max_batch` new events are collected (then
    ``more`` is set so the poller publishes, checkpoints and reads on at once). Offset paging
    is safe here: the window is recent, so retention never deletes rows inside it, and rows
    inserted while we page only shift later rows down, which re-reads them (duplicates, which
    collapse by id), never skips them.

    Catch-up: once a full page shows (``total_entries``) that more pages follow, up to
    `prefetch` of them are requested at once. A backlog is read at the speed of the source's
    API (one request at a time leaves it idle while we parse and publish). Only a page that
    came back full proves the server honours our page size, so a short page that is not the
    end (a ``maximum_page_limit`` below ours) ends the wave: the pages requested after it
    are dropped and the walk goes on one page at a time from where that page ended.
    """

    def __init__(
        self,
        client: AirflowClient,
        *,
        overlap: timedelta = DEFAULT_OVERLAP,
        max_batch: int = 1000,
        prefetch: int = 4,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._client = client
        self._overlap = overlap
        self._max_batch = max_batch
        self._prefetch = prefetch

    async def newest(self) -> SourceEvent | None:
        return await _newest(self._client)

    async def oldest(self) -> SourceEvent | None:
        return await _oldest(self._client)

    async def read(self, checkpoint: Checkpoint) -> Batch:
        lower = _lower_bound(checkpoint, self._overlap)
        limit = self._client.page_limit
        seen = set(checkpoint.seen_ids)
        collected: list[SourceEvent] = []
        invalid: list[BadResponse] = []
        offset = 0
        unseen = 0
        more = False
        times: list[datetime | None] = []
        wave = 1
        while True:
            offsets = [offset + k * limit for k in range(wave)]
            pages = await asyncio.gather(
                *(
                    self._client.list_events(
                        EventQuery(limit=limit, offset=o, ascending=True, timestamp_gte=lower)
                    )
                    for o in offsets
                )
            )
            done = False
            for page in pages:
                times.append(page.server_time)
                collected.extend(page.events)
                invalid.extend(page.invalid)
                rows = len(page.events) + len(page.invalid)
                if _history_ends(rows, page.total_entries, offset, limit):
                    done = True
                    break
                offset += rows
                unseen += sum(1 for e in page.events if e.id not in seen)
                if unseen >= self._max_batch:
                    more = done = True
                    break
                if rows < limit:
                    break  # the server caps pages below ours: the rest of the wave is off
            if done:
                break
            # After a short page, one at a time; after full ones, a wave of what is left.
            wave = self._wave(page.total_entries, offset, unseen) if rows == limit else 1
        events, reread = _select(collected, checkpoint, lower)
        return Batch(
            events=events,
            reread=reread,
            invalid=invalid,
            more=more,
            server_time=_earliest(times),
        )

    def _wave(self, total: int | None, offset: int, unseen: int) -> int:
        """How many pages to request at once next: those known to exist, up to the batch."""
        if total is None:
            return 1
        limit = self._client.page_limit
        pages_left = -(-(total - offset) // limit)
        pages_for_batch = -(-(self._max_batch - unseen) // limit)
        return max(1, min(self._prefetch, pages_left, pages_for_batch))


@dataclass(frozen=True)
class _Page:
    offset: int
    events: list[SourceEvent]  # in server order: timestamp descending, ties in any order
    invalid: list[BadResponse]
    rows: int
    end: bool
    server_time: datetime | None = None


def _runs(page: _Page) -> Iterable[tuple[datetime, int, int]]:
    """(timestamp, first index, last index) of each run of equal timestamps in a page."""
    events = page.events
    start = 0
    for i in range(1, len(events) + 1):
        if i == len(events) or events[i].timestamp != events[start].timestamp:
            yield events[start].timestamp, start, i - 1
            start = i


def _bounded(page: _Page, first: int, last: int) -> bool:
    """Whether one response shows a timestamp group with a neighbour on both sides.

    If so, the response holds the whole group: rows of one timestamp are contiguous in the
    sort, and a single SQL query returns a consistent slice of it.
    """
    above = first > 0 or page.offset == 0
    below = last < len(page.events) - 1 or page.end
    return above and below


class V1Cursor:
    """Airflow 2.x: walk ``order_by=-timestamp`` from offset 0 down to the window.

    Why descending, and not ``order_by=timestamp`` plus a remembered offset:

    - An ascending offset is a position counted from the *oldest* row. Retention (``airflow db
      clean``) deletes old rows, every position shifts, and a remembered offset silently skips
      that many new events. Finding the checkpoint again means reading from the start:
      O(history) requests per poll on a long-lived instance.
    - Counted from the newest row, deletions of old rows do not move anything above them, and
      new arrivals shift rows *down*: the next page re-reads a few rows we already have. That
      only causes duplicates, which the dedup by id absorbs. A poll costs O(new events + window)
      requests, however long the history.

    Ties: 2.x sorts by timestamp alone (no tie-breaker), so rows sharing a timestamp can come in
    a different order on every request, and a group of them that straddles a page boundary can
    lose members between two pages. The walk therefore checks every timestamp group in the
    window: a group is complete when one response shows it with a neighbour on both sides (or
    the start/end of history); otherwise the group is re-read with a page aligned on its start.
    A group larger than one page cannot be proven complete; it is logged and taken as read.

    Order: each batch is ascending by ``(timestamp, id)``. Across batches, events sharing a
    timestamp may come with a lower id after a higher one (the rest of a tie group cut by the
    memory bound below, or a late row); 3.x never does that.

    Memory: a first walk over a long history (``startFrom: earliest``) would hold all of it.
    The walk keeps only the oldest `max_batch` events (the ones due first) and sets ``more``;
    each following poll walks again. Catching up a history of H events therefore costs
    O(H^2 / max_batch / page) requests once, which is why the default batch here is larger
    than for 3.x.
    """

    def __init__(
        self,
        client: AirflowClient,
        *,
        overlap: timedelta = DEFAULT_OVERLAP,
        max_batch: int = 10_000,
        max_group_rereads: int = 4,
    ) -> None:
        self._client = client
        self._overlap = overlap
        self._max_batch = max_batch
        self._max_group_rereads = max_group_rereads

    async def newest(self) -> SourceEvent | None:
        return await _newest(self._client)

    async def oldest(self) -> SourceEvent | None:
        return await _oldest(self._client)

    async def _page(self, offset: int) -> _Page:
        limit = self._client.page_limit
        page = await self._client.list_events(
            EventQuery(limit=limit, offset=offset, ascending=False)
        )
        rows = len(page.events) + len(page.invalid)
        end = _history_ends(rows, page.total_entries, offset, limit)
        return _Page(offset, list(page.events), list(page.invalid), rows, end, page.server_time)

    async def read(self, checkpoint: Checkpoint) -> Batch:
        lower = _lower_bound(checkpoint, self._overlap)
        seen = set(checkpoint.seen_ids)

        def fresh(page: _Page) -> int:
            # Only unseen events count towards the bound: counting the re-read window too
            # would, with more than `max_batch` events in it, keep the walk truncated to
            # events already handled, reporting `more` forever without progress.
            return sum(
                1
                for e in page.events
                if e.id not in seen and (lower is None or e.timestamp >= lower)
            )

        pages: deque[_Page] = deque()
        times: list[datetime | None] = []
        retained = 0
        truncated = False
        offset = 0
        while True:
            page = await self._page(offset)
            pages.append(page)
            times.append(page.server_time)
            retained += fresh(page)
            if page.end:
                break
            if lower is not None and any(e.timestamp < lower for e in page.events):
                break  # everything further down is older than the window
            offset += page.rows
            while len(pages) > 1 and retained - fresh(pages[0]) >= self._max_batch:
                retained -= fresh(pages.popleft())
                truncated = True

        # The newest retained group may continue in pages we dropped; the rest of it is read
        # by the next poll (its timestamp becomes the checkpoint), so it is not verified here.
        cut = max((e.timestamp for e in pages[0].events), default=None) if truncated else None
        collected = [e for p in pages for e in p.events]
        collected += await self._complete_groups(pages, lower, cut)
        events, reread = _select(collected, checkpoint, lower)
        invalid = [exc for p in pages for exc in p.invalid]
        return Batch(
            events=events,
            reread=reread,
            invalid=invalid,
            more=truncated,
            server_time=_earliest(times),
        )

    async def _complete_groups(
        self, pages: Sequence[_Page], lower: datetime | None, cut: datetime | None
    ) -> list[SourceEvent]:
        verified: set[datetime] = set()
        hints: dict[datetime, int] = {}
        for page in pages:
            for ts, first, last in _runs(page):
                if (lower is not None and ts < lower) or ts == cut:
                    continue
                hints.setdefault(ts, page.offset + first)  # where the group starts
                if _bounded(page, first, last):
                    verified.add(ts)
        extra: list[SourceEvent] = []
        for ts in sorted(set(hints) - verified):
            group = await self._reread_group(ts, hints[ts])
            if group is None:
                log.warning(
                    "could not verify that all events sharing a timestamp were read; "
                    "Airflow 2.x sorts without a tie-breaker",
                    extra={"timestamp": ts.isoformat()},
                )
                continue
            extra.extend(group)
        return extra

    async def _reread_group(self, ts: datetime, position: int) -> list[SourceEvent] | None:
        """Read the rows with timestamp `ts` in one response; None when that is not possible."""
        limit = self._client.page_limit
        offset = max(0, position - 1)
        for _ in range(self._max_group_rereads):
            page = await self._page(offset)
            events = page.events
            members = [i for i, e in enumerate(events) if e.timestamp == ts]
            if members:
                first, last = members[0], members[-1]
                above = first > 0 or page.offset == 0
                below = last < len(events) - 1 or page.end
                if above and below:
                    return events[first : last + 1]
                if not above and not below:
                    return None  # the group fills the whole page: larger than a page
                if not above:
                    offset = max(0, offset - limit // 2)  # rows were inserted above it
                elif first <= 1:
                    return None  # from its start it fills the page: larger than a page
                else:
                    offset += first - 1
                continue
            if not events:
                return None
            if events[-1].timestamp > ts:  # all newer: the group moved down
                if page.end:
                    return []
                offset += max(1, page.rows - 1)
            elif events[0].timestamp < ts:  # all older: the group is above
                if offset == 0:
                    return []
                offset = max(0, offset - (limit - 1))
            else:
                return []  # neighbours on both sides and no member: the group is gone
        return None


def make_cursor(
    client: AirflowClient, *, overlap: timedelta = DEFAULT_OVERLAP, max_batch: int | None = None
) -> Cursor:
    """The strategy for the client's API version."""
    if client.api_version == "v2":
        return V2Cursor(client, overlap=overlap, max_batch=max_batch or 1000)
    return V1Cursor(client, overlap=overlap, max_batch=max_batch or 10_000)


def next_checkpoint(
    previous: Checkpoint,
    *,
    batch: Batch,
    handled: Sequence[SourceEvent],
    overlap: timedelta = DEFAULT_OVERLAP,
) -> Checkpoint:
    """The checkpoint after `handled` (a prefix of ``batch.events``) went out.

    "Handled" means published, or deliberately not published (filtered, a synced event, known
    to be in the transport already): the checkpoint must pass those too, or they would be read
    again forever. It never passes anything else: the timestamp is the newest handled one,
    and an unhandled event at that same timestamp is not in `seen_ids`, so it is read again.

    `seen_ids` = every handled or re-read id whose timestamp lies within `overlap` behind the
    new timestamp, capped at MAX_SEEN_IDS keeping the newest (see `_select` for what the cap
    costs).
    """
    if not handled:
        if previous.timestamp is None:
            return previous
        settled = _settled(previous, batch, handled, previous.timestamp, overlap)
        if settled == previous.settled_before:
            return previous
        return previous.model_copy(update={"settled_before": settled})
    newest = max(e.timestamp for e in handled)
    timestamp = newest if previous.timestamp is None else max(previous.timestamp, newest)
    known: dict[int, datetime] = dict(batch.reread)
    known.update((e.id, e.timestamp) for e in handled)
    if previous.timestamp is not None and timestamp == previous.timestamp:
        # The window did not move: ids seen before stay seen even if this read did not reach
        # them (they are ranked oldest for the cap, their timestamps being unknown here).
        for event_id in previous.seen_ids:
            known.setdefault(event_id, timestamp - overlap)
    keep = sorted((ts, i) for i, ts in known.items() if ts >= timestamp - overlap)
    keep = keep[-MAX_SEEN_IDS:]
    return Checkpoint(
        timestamp=timestamp,
        seen_ids=sorted(i for _, i in keep),
        initialized=previous.initialized,
        settled_before=_settled(previous, batch, handled, timestamp, overlap),
    )


def _settled(
    previous: Checkpoint,
    batch: Batch,
    handled: Sequence[SourceEvent],
    timestamp: datetime,
    overlap: timedelta,
) -> datetime | None:
    """How far back the next read must look (``settled_before``).

    Only handled events may be skipped, so the bound stays at or before the new checkpoint
    and the first event of the batch not handled yet (a late row below the checkpoint can be
    in that tail). A read that met invalid rows does not move it: they are being retried and
    must be read again. It never moves back, because `seen_ids` keeps only ids the next read
    can meet: a lower bound would re-read ids dropped from it and publish them twice.
    """
    settled = previous.settled_before
    if batch.server_time is None or batch.invalid:
        return settled
    candidate = min(timestamp, batch.server_time - overlap - SKEW)
    if len(batch.events) > len(handled):  # the first event not handled (events ascend)
        candidate = min(candidate, batch.events[len(handled)].timestamp)
    return candidate if settled is None else max(settled, candidate)


async def resolve_start(
    cursor: Cursor, start: StartFrom, *, overlap: timedelta = DEFAULT_OVERLAP
) -> Checkpoint:
    """The first checkpoint for `startFrom`; the caller saves it before publishing anything.

    - ``earliest``: an empty checkpoint, everything is new.
    - ``latest``: everything that exists now is handled: the checkpoint sits on the newest
      event with the ids of its window as seen, so the next read delivers only what comes
      after (and late rows committed after this moment).
    - a time T: events at or after T are new. The checkpoint sits at T with the ids of the
      window *before* T marked seen, since the overlap re-read would otherwise deliver them.

    Saving the result (``initialized=True``) before the first publish is what makes a restart
    resume from the checkpoint instead of resolving ``latest`` again and skipping the events
    that arrived in between.
    """
    if start == "earliest":
        return Checkpoint(initialized=True)
    if isinstance(start, datetime):
        anchor, inclusive = start, False
    else:
        newest = await cursor.newest()
        if newest is None:
            return Checkpoint(initialized=True)
        anchor, inclusive = newest.timestamp, True
    checkpoint = Checkpoint(timestamp=anchor)
    while True:
        batch = await cursor.read(checkpoint)
        handled = [e for e in batch.events if inclusive or e.timestamp < anchor]
        checkpoint = next_checkpoint(checkpoint, batch=batch, handled=handled, overlap=overlap)
        if not batch.more or len(handled) < len(batch.events):
            break
    return checkpoint.model_copy(update={"initialized": True})
