"""Classify what keeps a side of the worker from working, and report it in status.

The worker retries everything (a restart would not fix a wrong password either), but a
person must hear about failures that retrying cannot fix. Each side (the source, each target)
reports its current failure in ``status.source.failure`` / ``status.targets[].failure``
(`api.status.Failure`), which the operator turns into conditions:

- not retriable (the ``retriable`` flag every client error carries, `api.errors`: wrong
  credentials, a certificate that does not verify, Kafka authorization or settings): reported
  at once; the sync is Stalled.
- retriable (an instance or Kafka down): reported only once it has lasted `GRACE_SECONDS`,
  so a blip never flips Ready; the sync is then Reconciling.

A success clears the report. The message is the client's, which never holds a credential.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from airflow_asset_sync.api.errors import ServiceError
from airflow_asset_sync.api.status import (
    Failure,
    FailureComponent,
    FailureKind,
    SourceStatus,
    TargetStatus,
)
from airflow_asset_sync.worker.clock import Clock

#: How long a retriable failure must last before it is reported.
GRACE_SECONDS = 60.0
#: Reported messages are cut to this length (status stays small).
MAX_MESSAGE = 400

Side = Literal["Source", "Target"]
Component = FailureComponent
Kind = FailureKind


def classify(exc: BaseException) -> tuple[Kind, bool]:
    """The failure kind of `exc` and whether retrying may fix it, as the client's error says.

    Read from the data every client error carries (`api.errors.ServiceError`), so this
    module needs no client's classes (the engine imports no client module).
    """
    if isinstance(exc, ServiceError):
        return exc.failure_kind, exc.retriable
    # Anything else (a bug, an OS error) is retried like an outage: never Stalled on a guess.
    return "Unavailable", True


def component_of(exc: BaseException, side: Side) -> Component:
    """Which component failed: the one the error names (Kafka), else the side that called."""
    if isinstance(exc, ServiceError) and exc.component is not None:
        return exc.component
    return side


class FailureReport:
    """Reports one side's failures into its status object (see the module docstring)."""

    def __init__(
        self,
        status: SourceStatus | TargetStatus,
        *,
        side: Side,
        clock: Clock,
        grace: float = GRACE_SECONDS,
    ) -> None:
        self._status = status
        self._side: Side = side
        self._clock = clock
        self._grace = grace
        #: The streak not reported yet: (component, kind, since).
        self._pending: tuple[Component, Kind, datetime] | None = None

    def failed(self, exc: BaseException) -> None:
        """Record a failed attempt of this side."""
        kind, retriable = classify(exc)
        component = component_of(exc, self._side)
        now = self._clock.now()
        current = self._status.failure
        if current is not None and (current.component, current.kind) == (component, kind):
            since = current.since
        elif self._pending is not None and self._pending[:2] == (component, kind):
            since = self._pending[2]
        else:
            since = now
        if retriable and (now - since).total_seconds() < self._grace:
            self._pending = (component, kind, since)
            return
        self._pending = None
        self._status.failure = Failure(
            component=component,
            kind=kind,
            retriable=retriable,
            message=str(exc)[:MAX_MESSAGE] or type(exc).__name__,
            since=since,
        )

    def succeeded(self, *, component: str | None = None) -> None:
        """An attempt worked: clear the report (only `component`'s, when given)."""
        current = self._status.failure
        if component is None or (current is not None and current.component == component):
            self._status.failure = None
        if component is None or (self._pending is not None and self._pending[0] == component):
            self._pending = None
