"""Reading Airflow 3.x (``GET /api/v2/assets/events``): filtered by time, stable pages.

The 3.x listing takes ``timestamp_gte``, sorts by ``order_by=timestamp`` and appends the
primary key as a tie-breaker, so a walk of ascending pages from the window onwards is stable:
https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html
(``get_asset_events``).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.status import Checkpoint
from airflow_asset_sync.clients.airflow.base import AirflowClient, EventQuery, InvalidRow
from airflow_asset_sync.worker.cursor import checkpoint as window
from airflow_asset_sync.worker.cursor import paging
from airflow_asset_sync.worker.cursor.protocol import Batch

#: New events per read before it stops and sets ``more``.
DEFAULT_MAX_BATCH = 1000


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
        overlap: timedelta = window.DEFAULT_OVERLAP,
        max_batch: int = DEFAULT_MAX_BATCH,
        prefetch: int = 4,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._client = client
        self._overlap = overlap
        self._max_batch = max_batch
        self._prefetch = prefetch

    async def newest(self) -> SourceEvent | None:
        return await paging.newest(self._client)

    async def oldest(self) -> SourceEvent | None:
        return await paging.oldest(self._client)

    async def read(self, checkpoint: Checkpoint) -> Batch:
        lower = window.lower_bound(checkpoint, self._overlap)
        limit = self._client.page_limit
        seen = set(checkpoint.seen_ids)
        collected: list[SourceEvent] = []
        invalid: list[InvalidRow] = []
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
                if paging.history_ends(rows, page.total_entries, offset, limit):
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
        events, reread = window.select(collected, checkpoint, lower)
        return Batch(
            events=events,
            reread=reread,
            invalid=invalid,
            more=more,
            server_time=paging.earliest(times),
        )

    def _wave(self, total: int | None, offset: int, unseen: int) -> int:
        """How many pages to request at once next: those known to exist, up to the batch."""
        if total is None:
            return 1
        limit = self._client.page_limit
        pages_left = -(-(total - offset) // limit)
        pages_for_batch = -(-(self._max_batch - unseen) // limit)
        return max(1, min(self._prefetch, pages_left, pages_for_batch))
