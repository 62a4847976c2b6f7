"""What a read returns (`Batch`) and what every strategy offers (`Cursor`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.status import Checkpoint
from airflow_asset_sync.clients.airflow.base import InvalidRow


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
    invalid: list[InvalidRow] = field(default_factory=list)
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
