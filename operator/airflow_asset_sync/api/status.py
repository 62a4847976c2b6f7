"""`status` of an AirflowAssetSync, split by writer.

Two writers, disjoint fields, so neither ever overwrites the other (each sends a merge patch
of its own keys only):

- the operator owns ``observedGeneration``, ``conditions``, ``pokeUrl`` and (through kopf)
  ``lastHandledConfiguration``;
- the worker owns ``source``, ``targets`` (offsets and counters) and ``replay``.

Status stays small (one cursor, capped lists): etcd objects should stay well under 1.5 MB.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: Cap on ids kept at the checkpoint and on unknown assets listed per target.
MAX_SEEN_IDS = 1000
MAX_UNKNOWN_ASSETS = 20


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_patch(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_merge_patch(self) -> dict[str, Any]:
        """Every field, a None one as ``null``: in a JSON merge patch an absent key leaves the
        stored value alone, and only ``null`` deletes it. Without the nulls a cleared field
        (``lastError`` after a recovery) stayed in the object's status for good."""
        return self.model_dump(mode="json", by_alias=True)


class Checkpoint(StatusModel):
    """Where the poller resumes.

    ``timestamp`` is the newest source event time fully published; ``seen_ids`` are the ids of
    events published whose timestamp lies in the re-read window behind it (late rows are caught
    by re-reading that window; these ids stop them being published twice).
    """

    timestamp: datetime | None = None
    seen_ids: list[int] = Field(default_factory=list)
    #: Every source event older than this was visible and handled at an earlier read, so
    #: reads need not look behind it even inside the overlap window. Never after
    #: ``timestamp``; only moves forward. None: re-read the whole window.
    settled_before: datetime | None = None
    #: Set once the start position (startFrom) has been resolved, so a restart never re-applies it.
    initialized: bool = False


#: Where a worker failure happened, and what it was (`Failure`); `worker.failures` reports
#: them, `controller.conditions` turns each pair into a condition reason.
FailureComponent = Literal["Source", "Target", "Kafka"]
FailureKind = Literal["AuthFailed", "TLSFailed", "ConfigInvalid", "Rejected", "Unavailable"]


class Failure(StatusModel):
    """What keeps one side of the worker from working, as the worker classified it.

    Read by the operator to set conditions (`controller.conditions`): a failure that is not
    ``retriable`` (wrong password, unknown CA, Kafka authorization, invalid settings) makes
    the sync ``Stalled``; a retriable one (an instance down) is reported once it has lasted
    a grace period, as ``Reconciling``. Cleared by the next success. ``component`` is where
    it happened: the source, the target this entry belongs to, or Kafka. The message is the
    client's, which never contains credentials.
    """

    component: FailureComponent
    kind: FailureKind
    retriable: bool
    message: str
    #: When this kind of failure started (kept while it repeats).
    since: datetime

    @property
    def reason(self) -> str:
        """The condition reason, e.g. ``TargetAuthFailed``."""
        return f"{self.component}{self.kind}"


class SourceGap(StatusModel):
    """Source events that were deleted before the sync read them (`airflow db clean`).

    Detected when the events at the checkpoint are gone and the source's oldest event is
    newer than the checkpoint: its history was purged past the point the sync had read, so
    events in between may never have been seen (none if nothing was written in between; the
    source cannot tell). Kept until the next gap; the operator posts a Warning Event for
    each new one (see `controller.conditions`).
    """

    detected_at: datetime
    #: The checkpoint: every event up to this time had been read.
    after: datetime
    #: The oldest event the source still holds (None: it holds none).
    oldest_event_time: datetime | None = None
    message: str


class RunsStatus(StatusModel):
    """Progress reading DAG-run and task completions (`spec.dagRuns`), by the worker.

    A cursor of its own, in the same shape as the events' (`Checkpoint`): the time is a
    completion's ``end_date`` and the ids are completion ids (`worker.runs.ids`), so a
    restart resumes from here and neither loses nor repeats a completion.
    """

    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    last_poll_time: datetime | None = None
    #: Completions published as asset events, in all.
    published: int = 0
    last_error: str | None = None


class SourceStatus(StatusModel):
    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    api_version: Literal["v1", "v2"] | None = None
    last_poll_time: datetime | None = None
    last_event_time: datetime | None = None
    events_published: int = 0
    events_filtered: int = 0
    events_invalid: int = 0
    #: Events published with values Airflow had masked to ``"***"`` (`api.redaction`).
    events_redacted: int = 0
    #: Purges detected past the checkpoint (`SourceGap`), and the latest.
    gaps: int = 0
    last_gap: SourceGap | None = None
    last_error: str | None = None
    failure: Failure | None = None
    #: Set once `spec.dagRuns` has selectors (None: completions are not read).
    runs: RunsStatus | None = None


class ParkedEvent(StatusModel):
    """One event waiting for its asset to exist in the target, or (delivery mode
    ``oneRunPerEvent``) for a consumer to take the asset's previous event: what is needed to
    write it.

    ``origin``, ``sync``, ``id`` and ``timestamp`` rebuild the marker; ``extra`` is the
    source's ``extra`` as JSON text (a string, so the CRD's status schema stays structural
    and prunes nothing; the marker is added when written); ``parked_at`` is when it was
    parked (the maximum age is measured from it).
    """

    id: int
    origin: str
    sync: str
    timestamp: datetime
    extra: str = "{}"
    #: The source event's AIP-76 partition (Airflow 3.2+), written with it when it drains.
    partition_key: str | None = None
    parked_at: datetime


#: Why an asset's events are parked: the target does not know the asset yet, or (delivery
#: mode ``oneRunPerEvent``) a consumer DAG of the target still has its previous event queued.
ParkReason = Literal["unknownAsset", "awaitingConsumer"]


class ParkedAsset(StatusModel):
    """Events of one target asset (the URI as written, after rewrite rules) parked in order."""

    uri: str
    reason: ParkReason = "unknownAsset"
    count: int = 0
    #: Source time of the oldest parked event, and when it was parked.
    oldest_event_time: datetime | None = None
    parked_since: datetime | None = None
    events: list[ParkedEvent] = Field(default_factory=list)

    def refresh(self) -> None:
        """Recompute the summary fields from ``events``."""
        self.count = len(self.events)
        first = self.events[0] if self.events else None
        self.oldest_event_time = first.timestamp if first else None
        self.parked_since = min((e.parked_at for e in self.events), default=None)


class TargetStatus(StatusModel):
    name: str
    api_version: Literal["v1", "v2"] | None = None
    last_source_event_id: int | None = None
    last_replay_time: datetime | None = None
    events_replayed: int = 0
    events_skipped: int = 0
    events_deduplicated: int = 0
    events_failed: int = 0
    #: Source events written inside another event's target event (``coalesce``): a write of
    #: n events adds n - 1 here and n to ``events_replayed``.
    events_coalesced: int = 0
    lag_seconds: float | None = None
    unknown_assets: list[str] = Field(default_factory=list)
    #: Events parked per unknown asset (``onUnknownAsset: retry``) or held for a consumer
    #: (``oneRunPerEvent``), durable here until written: see `worker.parking`.
    parked: list[ParkedAsset] = Field(default_factory=list)
    parked_events: int = 0
    last_error: str | None = None
    failure: Failure | None = None


ReplayPhase = Literal["Running", "Succeeded", "Failed"]


class ReplayStatus(StatusModel):
    """The outcome of the last ``spec.replay`` (`worker.replay`), kept until the next id.

    ``until`` is the end the worker used: the spec's, else the live checkpoint when the
    replay started (later events are the live stream's). Succeeded means every replayed
    event is in the transport (with the in-process channel: committed by every target); the
    targets skip, by marker, those they already have. ``message`` never holds a credential.
    """

    id: str
    from_: datetime = Field(alias="from")
    until: datetime | None = None
    phase: ReplayPhase
    started_at: datetime | None = None
    finished_at: datetime | None = None
    events_read: int = 0
    events_published: int = 0
    message: str | None = None


class WorkerStatus(StatusModel):
    """The worker-owned part of status."""

    source: SourceStatus = Field(default_factory=SourceStatus)
    targets: list[TargetStatus] = Field(default_factory=list)
    #: The largest ``lag_seconds`` of any target (the ``Lag`` printer column): written by
    #: the store with the targets (see `largest_lag`), never read back.
    lag_seconds: float | None = None
    #: The last replay asked for in ``spec.replay`` (None: never asked).
    replay: ReplayStatus | None = None

    @staticmethod
    def largest_lag(targets: Iterable[TargetStatus]) -> float | None:
        """The lag of the furthest-behind target whose lag is known."""
        return max((t.lag_seconds for t in targets if t.lag_seconds is not None), default=None)

    def target(self, name: str) -> TargetStatus:
        for t in self.targets:
            if t.name == name:
                return t
        status = TargetStatus(name=name)
        self.targets.append(status)
        return status


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A Kubernetes condition (metav1.Condition shape)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None
