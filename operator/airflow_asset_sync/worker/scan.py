"""One page walk over an event listing by time, shared by `verify` and replays.

Why shared: `verify` (compare a window), a replay's source read (`replay`) and a replay's
target check by marker (`replay_dedup`) all need "every event from a time on", and the two
Airflow APIs differ in how that is read; one walk keeps their answers consistent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from airflow_asset_sync.api.events import Marker
from airflow_asset_sync.clients.airflow.base import AirflowClient, EventPage, EventQuery

#: (origin, source event id, sync): `Marker.key`.
MarkerKey = tuple[str, int, str]


async def pages(
    client: AirflowClient,
    since: datetime,
    *,
    until: datetime | None = None,
    asset_uri: str | None = None,
) -> AsyncIterator[EventPage]:
    """The listing's pages that can hold events from `since` on (up to `until`, if given).

    3.x is read oldest first from `since` (its time filter); 2.x has none, so it is read
    newest first until `since`. Offsets only ever move forward: a row committed during the
    scan can shift a 2.x page, which re-reads a row (callers keep it once, by id), never
    skips one. One request at a time, at the client's page limit.
    """
    ascending = client.api_version == "v2"
    offset = 0
    while True:
        page = await client.list_events(
            EventQuery(
                limit=client.page_limit,
                offset=offset,
                ascending=ascending,
                timestamp_gte=since if ascending else None,
                asset_uri=asset_uri,
            )
        )
        rows = len(page.events) + len(page.invalid)
        offset += rows
        yield page
        if last_page(page, rows, offset):
            return
        if not page.events:
            continue  # a page of unreadable rows only: read on
        last = page.events[-1].timestamp
        if (ascending and until is not None and last > until) or (not ascending and last < since):
            return


def last_page(page: EventPage, rows: int, offset: int) -> bool:
    """No more rows. Not "a short page": a server whose page cap is below ours (Airflow's
    `maximum_page_limit`) answers short pages that are not the end."""
    return rows == 0 or (page.total_entries is not None and offset >= page.total_entries)


async def marker_keys(client: AirflowClient, uri: str, since: datetime) -> set[MarkerKey]:
    """Marker keys of every event of a target asset written at or after `since`, all pages."""
    keys: set[MarkerKey] = set()
    async for page in pages(client, since, asset_uri=uri):
        for event in page.events:
            marker = Marker.from_extra(event.extra)
            if marker is not None and event.timestamp >= since:
                keys.update(marker.keys)  # every id of a coalesced event
    return keys
