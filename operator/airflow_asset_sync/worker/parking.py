"""Parked events: deliveries for an asset the target does not know yet, kept per asset.

With ``onUnknownAsset: retry`` an event whose asset the target answers "not found" for is
*parked* instead of holding back the target's whole stream: it is stored, its delivery is
committed, and every other asset keeps flowing. Later events of an asset that has parked
events are parked behind them, so each asset's events still reach the target in order.

Where they live: in ``status.targets[].parked`` of the worker status, i.e. the worker's
`OffsetStore` (the AirflowAssetSync's status in a cluster, the state file standalone). That
store is already the worker's durable state, survives SIGKILL and restarts in both transport
modes, and needs no new infrastructure; the replayer saves the target status *before* it
commits a delivery it parked, so the transport (Kafka offsets, or the in-process channel and
with it the source checkpoint) moves past a parked event only once the event is stored.

Limits, per target (`ParkingLimits`):

- ``max_events`` / ``max_bytes``: past either, new events are not parked: the replayer waits
  (back-pressure, as before parking existed) with the reason in ``lastError`` and the log,
  rather than drop anything. The byte budget keeps the object's status well below etcd's
  1.5 MB object limit (``extra`` can be up to 256 KiB per event).
- ``max_age``: an event parked longer than this is dropped with a warning and counted in
  ``eventsSkipped`` (metric reason ``parked_expired``).

The same lot holds the events of delivery mode ``oneRunPerEvent`` that wait for a consumer
DAG to take the asset's previous event (reason ``awaitingConsumer``): durable, committed and
out of the way of other assets in the same way. Those never expire: the consumer is there,
only slow (or stopped), and dropping its events would lose them; the count and byte limits
still apply (back-pressure).

This module is the bookkeeping only (pure, no I/O); the replayer probes, writes and saves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_asset_sync.api.events import MARKER_KEY, Envelope, SourceEvent
from airflow_asset_sync.api.status import ParkedAsset, ParkedEvent, ParkReason, TargetStatus

#: (origin, source event id, sync), as `replayer.Key`.
Key = tuple[str, int, str]


@dataclass(frozen=True)
class ParkingLimits:
    #: Parked events per target before back-pressure.
    max_events: int = 1000
    #: Serialised size of the parked events per target before back-pressure.
    max_bytes: int = 256 * 1024
    #: How long an event may stay parked before it is dropped (and counted).
    max_age: timedelta = timedelta(days=30)


def parked_event(envelope: Envelope, now: datetime) -> ParkedEvent:
    event = envelope.event
    return ParkedEvent(
        id=event.id,
        origin=envelope.origin,
        sync=envelope.sync,
        timestamp=event.timestamp,
        extra=json.dumps(event.extra, separators=(",", ":"), sort_keys=True, default=str),
        partition_key=event.partition_key,
        parked_at=now,
    )


def to_envelope(uri: str, parked: ParkedEvent) -> Envelope:
    """The envelope to write a parked event with (``uri`` is the target's)."""
    event = SourceEvent(
        id=parked.id,
        uri=uri,
        timestamp=parked.timestamp,
        extra=_extra(parked),
        partition_key=parked.partition_key,
    )
    return Envelope(sync=parked.sync, origin=parked.origin, event=event)


def key_of(parked: ParkedEvent) -> Key:
    """The delivery's `Marker.key`: a forwarded copy's is its origin event's (`Envelope.marker`)."""
    if MARKER_KEY not in parked.extra:  # a plain event: no need to parse its extra
        return (parked.origin, parked.id, parked.sync)
    return to_envelope("", parked).marker().key


def _extra(parked: ParkedEvent) -> dict[str, object]:
    value = json.loads(parked.extra)
    return value if isinstance(value, dict) else {}


def _size(parked: ParkedEvent) -> int:
    return len(parked.model_dump_json(by_alias=True))


class ParkingLot:
    """The parked events of one target, kept in (and mutating) ``status.parked``."""

    def __init__(self, status: TargetStatus, limits: ParkingLimits) -> None:
        self._status = status
        self.limits = limits
        self._keys: set[Key] = set()
        self._bytes = 0
        for asset in status.parked:
            asset.refresh()
            for event in asset.events:
                self._keys.add(key_of(event))
                self._bytes += _size(event)
        status.parked = [a for a in status.parked if a.events]
        self._sync_total()

    # -- queries -------------------------------------------------------------------------------

    @property
    def assets(self) -> list[ParkedAsset]:
        return list(self._status.parked)

    @property
    def total(self) -> int:
        return self._status.parked_events

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def full(self) -> str | None:
        """Why nothing more can be parked, or None."""
        if self.total >= self.limits.max_events:
            return f"{self.total} events parked (limit {self.limits.max_events})"
        if self._bytes >= self.limits.max_bytes:
            return f"{self._bytes} bytes of parked events (limit {self.limits.max_bytes})"
        return None

    def is_parked(self, uri: str) -> bool:
        return self._find(uri) is not None

    def holds(self, key: Key) -> bool:
        return key in self._keys

    def reason(self, uri: str) -> ParkReason | None:
        asset = self._find(uri)
        return asset.reason if asset is not None else None

    def set_reason(self, uri: str, reason: ParkReason) -> None:
        asset = self._find(uri)
        if asset is not None:
            asset.reason = reason

    def head(self, uri: str) -> ParkedEvent | None:
        asset = self._find(uri)
        return asset.events[0] if asset is not None and asset.events else None

    def oldest_parked_at(self) -> datetime | None:
        return min(
            (a.parked_since for a in self._status.parked if a.parked_since is not None),
            default=None,
        )

    # -- changes -------------------------------------------------------------------------------

    def park(
        self,
        uri: str,
        envelope: Envelope,
        now: datetime,
        reason: ParkReason = "unknownAsset",
    ) -> bool:
        """Append `envelope` to `uri`'s queue; False if it was already parked (idempotent).

        `reason` applies when this starts the asset's queue; a queue keeps its reason.
        """
        event = parked_event(envelope, now)
        key = key_of(event)
        if key in self._keys:
            return False
        asset = self._find(uri)
        if asset is None:
            asset = ParkedAsset(uri=uri, reason=reason)
            self._status.parked.append(asset)
        asset.events.append(event)
        asset.refresh()
        self._keys.add(key)
        self._bytes += _size(event)
        self._sync_total()
        return True

    def pop_head(self, uri: str) -> ParkedEvent | None:
        asset = self._find(uri)
        if asset is None or not asset.events:
            return None
        event = asset.events.pop(0)
        self._forget(event)
        if asset.events:
            asset.refresh()
        else:
            self._status.parked.remove(asset)
        self._sync_total()
        return event

    def expire(self, now: datetime) -> list[tuple[str, ParkedEvent]]:
        """Drop and return the events parked longer than the maximum age.

        Events awaiting a consumer (``oneRunPerEvent``) are kept, however old.
        """
        cutoff = now - self.limits.max_age
        dropped: list[tuple[str, ParkedEvent]] = []
        for asset in list(self._status.parked):
            if asset.reason == "awaitingConsumer":
                continue
            if asset.parked_since is None or asset.parked_since > cutoff:
                continue
            kept = []
            for event in asset.events:
                if event.parked_at <= cutoff:
                    dropped.append((asset.uri, event))
                    self._forget(event)
                else:
                    kept.append(event)
            asset.events = kept
            if kept:
                asset.refresh()
            else:
                self._status.parked.remove(asset)
        if dropped:
            self._sync_total()
        return dropped

    def _forget(self, event: ParkedEvent) -> None:
        self._keys.discard(key_of(event))
        self._bytes = max(0, self._bytes - _size(event))

    def _find(self, uri: str) -> ParkedAsset | None:
        for asset in self._status.parked:
            if asset.uri == uri:
                return asset
        return None

    def _sync_total(self) -> None:
        self._status.parked_events = sum(len(a.events) for a in self._status.parked)
