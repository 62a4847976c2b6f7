"""Walking an event listing page by page: where it ends, its ends, its server time.

Shared by both strategies; nothing here knows about checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.clients.airflow.base import AirflowClient, EventQuery


def history_ends(rows: int, total: int | None, offset: int, limit: int) -> bool:
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


def earliest(times: Iterable[datetime | None]) -> datetime | None:
    """The earliest time, or None if any is unknown (one answer without a ``Date``)."""
    found: datetime | None = None
    for t in times:
        if t is None:
            return None
        found = t if found is None else min(found, t)
    return found


async def newest(client: AirflowClient) -> SourceEvent | None:
    """First valid event in descending order (skipping invalid rows at the top)."""
    return await _end(client, ascending=False)


async def oldest(client: AirflowClient) -> SourceEvent | None:
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
        if history_ends(rows, page.total_entries, offset, limit):
            return None
        offset += rows
