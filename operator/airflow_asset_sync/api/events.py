"""Asset events as they travel: read from a source, wrapped for Kafka, marked in the target.

One normalised `SourceEvent` shape covers both Airflow APIs (2.x `dataset_*` and 3.x
`asset_*` names). The `Envelope` is the versioned Kafka message; the `Marker` is the object
written into the target event's `extra` under `MARKER_KEY`.

Why a marker in `extra` rather than a side table: it is the only place both Airflow APIs let a
client store data with an event, and it is visible to whoever reads the target later. It is
how a replayer recognises its own earlier writes after a crash (dedup) and how a poller knows
an event was itself synced: it forwards such a copy only to targets not on the marker's
``path`` (chains A -> B -> C, hubs, rings; `worker.forwarding`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

MARKER_KEY = "airflow_asset_sync"
SCHEMA = "airflow-asset-sync/event"
SCHEMA_VERSION = 1

#: Largest `extra` (serialised JSON bytes) carried across. Airflow accepts larger ones, but a
#: megabyte-sized `extra` would also land in every Kafka message and every target database;
#: such an event is rejected with a clear error and counted instead.
MAX_EXTRA_BYTES = 256 * 1024


class SourceEvent(BaseModel):
    """One asset event as read from a source instance, in a version-neutral shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    uri: str
    name: str | None = None
    group: str | None = None
    asset_id: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime
    source_dag_id: str | None = None
    source_task_id: str | None = None
    source_run_id: str | None = None
    source_map_index: int | None = None
    #: AIP-76 partition of the event (Airflow 3.2+ only; None elsewhere). Carried to 3.2+
    #: targets as the event's own ``partition_key`` and always recorded in the marker, the
    #: only place a 2.x (or 3.0/3.1) target can keep it.
    partition_key: str | None = None

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event timestamp has no time zone")
        return value.astimezone(UTC)

    @field_validator("extra")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), default=str))
        if size > MAX_EXTRA_BYTES:
            raise ValueError(f"extra is {size} bytes, above the {MAX_EXTRA_BYTES} byte limit")
        return value

    @property
    def sort_key(self) -> tuple[datetime, int]:
        """Delivery order: by time, id as the tie-breaker (as Airflow 3 sorts)."""
        return (self.timestamp, self.id)

    @property
    def marker(self) -> Marker | None:
        """The sync marker if this event was itself written by a sync."""
        return Marker.from_extra(self.extra)


class Marker(BaseModel):
    """What a replayer writes under `extra[MARKER_KEY]` in the target."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    origin: str
    event_id: int
    timestamp: datetime
    sync: str
    #: The source event's ``partition_key``, if it had one (not part of the dedup key).
    partition_key: str | None = None
    #: Delivery mode ``coalesce``: the ids of every source event this one target event stands
    #: for (``event_id``, the newest, among them). Empty for a plain one-to-one copy.
    coalesced: tuple[int, ...] = ()
    #: The instances (source identities, ``Endpoint.identity``) the event went through before
    #: the target that holds this copy, in order, ``origin`` first: ``(A,)`` for a copy
    #: A -> B, ``(A, B)`` for its forwarded copy in C. Empty in markers written before
    #: chains existed: they mean one hop from ``origin`` (`hops`).
    path: tuple[str, ...] = ()

    @property
    def hops(self) -> tuple[str, ...]:
        """`path`, read compatibly: an old marker without one is one hop from its origin."""
        return self.path or (self.origin,)

    @property
    def forwarded(self) -> bool:
        """True for a copy of a copy: the event came through an instance other than origin."""
        return len(self.hops) > 1

    @property
    def origin_key(self) -> tuple[str, int]:
        """The origin event (origin instance, its event id) whatever sync and path carried it."""
        return (self.origin, self.event_id)

    @property
    def event_ids(self) -> tuple[int, ...]:
        """The source event ids this target event delivers: one, or a coalesced set."""
        return self.coalesced or (self.event_id,)

    @property
    def keys(self) -> list[tuple[str, int, str]]:
        """`key` of every source event this target event delivers (dedup and verify)."""
        return [(self.origin, event_id, self.sync) for event_id in self.event_ids]

    @property
    def key(self) -> tuple[str, int, str]:
        """Dedup key: one source event (origin, id) as delivered by one sync.

        The sync is part of it on purpose. Dedup only ever looks at a few pages of the
        target's newest events, so a key without the sync made a second sync between the
        same instances skip some of the first one's events and copy the rest. With the sync
        in the key the rule is whole: each sync delivers each matching event once, and two
        syncs between the same instances are two deliveries (edit a sync instead of
        replacing it: its offsets carry over).
        """
        return (self.origin, self.event_id, self.sync)

    @classmethod
    def from_extra(cls, extra: dict[str, Any] | None) -> Self | None:
        raw = (extra or {}).get(MARKER_KEY)
        if not isinstance(raw, dict):
            return None
        try:
            return cls.model_validate(raw)
        except ValueError:
            return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "origin": self.origin,
            "event_id": self.event_id,
            "timestamp": self.timestamp.isoformat(),
            "sync": self.sync,
        }
        # Only when set: markers of unpartitioned events stay exactly what they were.
        if self.partition_key is not None:
            out["partition_key"] = self.partition_key
        if self.coalesced:  # left out otherwise: plain copies stay byte for byte as before
            out["coalesced"] = list(self.coalesced)
        if self.path:
            out["path"] = list(self.path)
        return out


class ReplayTag(BaseModel):
    """Marks an envelope as re-sent by a replay (``spec.replay``), not read live.

    The replayer checks such a delivery against every copy the target holds since `from`
    (not only its newest pages), so a replay writes only what is missing. Carried in the
    message, not looked up in the spec, because a delivery can outlive the spec that sent it
    (Kafka keeps it across a rollout).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: str
    from_: datetime = Field(alias="from")


class Envelope(BaseModel):
    """The Kafka message value: a source event plus where it came from.

    Versioned so that a replayer can skip (and count) messages of a schema it does not know
    rather than crash on them; the key is the asset URI, so events of one asset stay ordered
    within a partition. ``replay`` is optional and left out when unset, so live messages are
    byte for byte what they were and an older replayer reads a replayed one as live (same
    schema version).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_: str = Field(SCHEMA, alias="schema")
    version: int = SCHEMA_VERSION
    sync: str
    origin: str
    event: SourceEvent
    replay: ReplayTag | None = None

    def marker(self) -> Marker:
        """The marker this delivery writes into the target.

        A source event that is itself a copy (its ``extra`` carries a marker: the event is
        being forwarded, B -> C of A -> B -> C) keeps its upstream's origin event: ``origin``,
        ``event_id``, ``timestamp``, ``partition_key`` and ``coalesced`` are the upstream
        marker's, and ``path`` grows by this sync's source. So every copy of an event, however
        far it travelled, names the event where it was born (the exactly-once identity, see
        `worker.copies`), and ``sync`` names the sync that wrote this copy (its own-write
        key). A source event without a marker starts a path of one: ``(origin,)``.
        """
        upstream = self.event.marker
        if upstream is None:
            return Marker(
                origin=self.origin,
                event_id=self.event.id,
                timestamp=self.event.timestamp,
                sync=self.sync,
                partition_key=self.event.partition_key,
                path=(self.origin,),
            )
        return Marker(
            origin=upstream.origin,
            event_id=upstream.event_id,
            timestamp=upstream.timestamp,
            sync=self.sync,
            partition_key=upstream.partition_key or self.event.partition_key,
            coalesced=upstream.coalesced,
            path=(*upstream.hops, self.origin),
        )

    def target_extra(self, coalesced: tuple[int, ...] = ()) -> dict[str, Any]:
        """`extra` for the target event: the source's, without a stale marker, plus ours.

        `coalesced`: the ids of the source events this write stands for (delivery mode
        ``coalesce``; this envelope is the newest of them, so its ``extra`` is the one kept).
        """
        extra = {k: v for k, v in self.event.extra.items() if k != MARKER_KEY}
        marker = self.marker()
        if coalesced:
            marker = marker.model_copy(update={"coalesced": tuple(coalesced)})
        extra[MARKER_KEY] = marker.to_json()
        return extra

    def to_bytes(self) -> bytes:
        """The message value. Unset optional fields are left out (``replay``, and the event's
        ``partition_key``), so messages without them are byte for byte what they were, and
        an older replayer, whose `SourceEvent` forbids unknown fields, still reads them."""
        exclude: dict[str, Any] = {}
        if self.replay is None:
            exclude["replay"] = True
        if self.event.partition_key is None:
            exclude["event"] = {"partition_key"}
        return self.model_dump_json(by_alias=True, exclude=exclude or None).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse a message value; raises `UnknownMessage` for anything that is not ours."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UnknownMessage("not JSON") from exc
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise UnknownMessage("not an airflow-asset-sync event")
        if raw.get("version") != SCHEMA_VERSION:
            raise UnknownMessage(f"unknown schema version {raw.get('version')!r}")
        try:
            return cls.model_validate(raw)
        except ValueError as exc:
            raise UnknownMessage(f"invalid event: {exc.__class__.__name__}") from exc


class UnknownMessage(ValueError):
    """A Kafka message that is not an event of ours (skipped and counted, never fatal)."""
