"""Reading Airflow 2.x (``GET /api/v1/datasets/events``): no time filter, no tie-breaker.

The 2.x listing takes ``limit``, ``offset`` and ``order_by`` (any other parameter is a 400:
connexion validates strictly) and sorts by the one column asked for, so rows sharing a
timestamp come in no fixed order:
https://airflow.apache.org/docs/apache-airflow/2.11.0/stable-rest-api-ref.html
(``get_dataset_events``). 2.x has no time filter (apache/airflow#41126).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.status import Checkpoint
from airflow_asset_sync.clients.airflow.base import AirflowClient, EventQuery, InvalidRow
from airflow_asset_sync.worker.cursor import checkpoint as window
from airflow_asset_sync.worker.cursor import paging
from airflow_asset_sync.worker.cursor.protocol import Batch

log = logging.getLogger(__name__)

#: Events kept per read before it stops and sets ``more`` (larger than 3.x's: see `V1Cursor`).
DEFAULT_MAX_BATCH = 10_000


@dataclass(frozen=True)
class _Page:
    offset: int
    events: list[SourceEvent]  # in server order: timestamp descending, ties in any order
    invalid: list[InvalidRow]
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
        overlap: timedelta = window.DEFAULT_OVERLAP,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_group_rereads: int = 4,
    ) -> None:
        self._client = client
        self._overlap = overlap
        self._max_batch = max_batch
        self._max_group_rereads = max_group_rereads

    async def newest(self) -> SourceEvent | None:
        return await paging.newest(self._client)

    async def oldest(self) -> SourceEvent | None:
        return await paging.oldest(self._client)

    async def _page(self, offset: int) -> _Page:
        limit = self._client.page_limit
        page = await self._client.list_events(
            EventQuery(limit=limit, offset=offset, ascending=False)
        )
        rows = len(page.events) + len(page.invalid)
        end = paging.history_ends(rows, page.total_entries, offset, limit)
        return _Page(offset, list(page.events), list(page.invalid), rows, end, page.server_time)

    async def read(self, checkpoint: Checkpoint) -> Batch:
        lower = window.lower_bound(checkpoint, self._overlap)
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
        events, reread = window.select(collected, checkpoint, lower)
        invalid = [exc for p in pages for exc in p.invalid]
        return Batch(
            events=events,
            reread=reread,
            invalid=invalid,
            more=truncated,
            server_time=paging.earliest(times),
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
