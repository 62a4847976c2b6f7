"""The seam between the poller and the replayers: Kafka in a cluster, in-process locally.

It lives in the data layer because both sides of it sit above: `clients.kafka` implements it
and builds `Delivery` values, the worker's engine consumes it. (In the worker, the Kafka
client could only return the worker's `Delivery` through a factory the worker passed in.)

Both implementations keep one promise the poller relies on: ``publish`` returns only when
the events are durable (Kafka acknowledged them; or, in-process, every target committed
them), so the source checkpoint never moves past an event that could still be lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from airflow_asset_sync.api.events import Envelope


@dataclass(frozen=True)
class Delivery:
    """One message handed to a replayer.

    ``envelope`` is None for a message that is not ours (not JSON, unknown schema version):
    the replayer counts it, commits past it and keeps going. ``position`` is opaque to the
    replayer (Kafka: (partition, offset)); ``problem`` says why a message was not understood.
    """

    envelope: Envelope | None
    position: tuple[int, int]
    problem: str | None = None


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Return once every envelope is durable; raise if that cannot be ensured."""
        ...

    async def published_keys(self, origin: str) -> set[int]:
        """Source event ids of ``origin`` already in the transport's recent tail.

        After a crash between publish and checkpoint the poller re-reads events it already
        published; these ids let it skip them so the transport holds each event once.
        """
        ...

    async def stop(self) -> None: ...


class Subscription(Protocol):
    """One target's independent view of the stream (a Kafka consumer group per target)."""

    async def start(self) -> None: ...

    async def fetch(self, max_records: int, timeout_s: float) -> list[Delivery]:
        """Next deliveries in order; an empty list when nothing arrived within the timeout."""
        ...

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Mark these deliveries done; a restart resumes after the last committed one."""
        ...

    async def stop(self) -> None: ...
