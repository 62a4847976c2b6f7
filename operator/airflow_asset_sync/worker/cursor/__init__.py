"""Reading "the source events that are new since the checkpoint".

Every read re-reads an *overlap window* behind the checkpoint, for rows whose transaction
committed after rows with later timestamps were read, and drops the ids it has already seen;
the window and the rest of the arithmetic are in `checkpoint`.

Two strategies, because the two event listings differ (`/api/v2/assets/events` filters by
time; `/api/v1/datasets/events` neither filters by time nor sorts by id):

- `v2.V2Cursor` (Airflow 3.x): ``timestamp_gte`` filter, ascending, with the server appending
  the id as tie-breaker, so a page walk is stable.
- `v1.V1Cursor` (Airflow 2.x): no time filter, no ordering by id, no tie-breaker. It walks
  ``order_by=-timestamp`` from the newest event down to the window; see its docstring.

Both return a `protocol.Batch`: the new events ascending by ``(timestamp, id)``, which is the
order the poller publishes and checkpoints in. `checkpoint.next_checkpoint` computes the
checkpoint after a batch (or a prefix of it) was handled; `checkpoint.resolve_start` turns
``startFrom`` into the first checkpoint. `paging` holds what both walks share.
"""

from __future__ import annotations

from datetime import timedelta

from airflow_asset_sync.clients.airflow.base import AirflowClient
from airflow_asset_sync.worker.cursor import v1, v2
from airflow_asset_sync.worker.cursor.checkpoint import (
    DEFAULT_OVERLAP,
    next_checkpoint,
    resolve_start,
)
from airflow_asset_sync.worker.cursor.protocol import Batch, Cursor
from airflow_asset_sync.worker.cursor.v1 import V1Cursor
from airflow_asset_sync.worker.cursor.v2 import V2Cursor

__all__ = [
    "DEFAULT_OVERLAP",
    "Batch",
    "Cursor",
    "V1Cursor",
    "V2Cursor",
    "make_cursor",
    "next_checkpoint",
    "resolve_start",
]


def make_cursor(
    client: AirflowClient, *, overlap: timedelta = DEFAULT_OVERLAP, max_batch: int | None = None
) -> Cursor:
    """The strategy for the client's API version (`max_batch` None: the strategy's default)."""
    if client.api_version == "v2":
        return V2Cursor(client, overlap=overlap, max_batch=max_batch or v2.DEFAULT_MAX_BATCH)
    return V1Cursor(client, overlap=overlap, max_batch=max_batch or v1.DEFAULT_MAX_BATCH)
