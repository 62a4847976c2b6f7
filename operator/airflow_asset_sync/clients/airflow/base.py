"""The one interface both Airflow API clients implement, and their error tree.

Error tree (``retriable`` and ``failure_kind`` are class attributes, as in aiokafka; the
root, `api.errors.ServiceError`, says what they mean). The kind is in brackets::

    AirflowError                 [Unavailable]
     +-- Unavailable             retriable: 5xx, timeouts, connection errors (after retries)
     |    +-- WriteOutcomeUnknown  a POST failed after the request may have reached the server
     +-- AuthFailed  [AuthFailed]  401/403 after a re-login attempt; a person must fix credentials
     +-- TlsFailed   [TLSFailed]   the server's certificate does not verify (unknown CA,
     |                             expired, wrong host name); a person must fix the CA or URL
     +-- AssetNotFound           404 for the asset: the target does not know it (yet)
     +-- BadRequest  [Rejected]    4xx other than the above: our request is wrong for the server
     +-- BadResponse [Rejected]    the server answered, but not with what the API promises
          |                        (HTML error page, missing fields, wrong types, big extra)
          +-- InvalidRow         one row of a listing failed validation (in `EventPage.invalid`)

The HTTP library's own exception is chained as ``__cause__``. Messages never contain
credentials, tokens or request headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from airflow_asset_sync.api.errors import ServiceError
from airflow_asset_sync.api.events import SourceEvent


class AirflowError(ServiceError):
    """The Airflow instance of the side that called (source or target) failed it."""


class Unavailable(AirflowError):
    retriable = True


class WriteOutcomeUnknown(Unavailable):
    """A POST failed in a way that does not tell whether the event was created.

    Neither Airflow API is idempotent: re-POSTing creates a second event. After a read
    timeout, a dropped connection or a 500/502/504 the first attempt may have committed, so
    the client does not retry blindly; the caller decides (e.g. look for its marker in the
    target before writing again). Still ``retriable``: retrying is allowed, not free.
    """


class AuthFailed(AirflowError):
    failure_kind = "AuthFailed"


class TlsFailed(AirflowError):
    """Certificate verification failed: retrying cannot help until the CA or URL changes."""

    failure_kind = "TLSFailed"


class AssetNotFound(AirflowError):
    pass


class BadRequest(AirflowError):
    failure_kind = "Rejected"


class BadResponse(AirflowError):
    failure_kind = "Rejected"


class InvalidRow(BadResponse):
    """One listing row that failed validation, with what could still be read of it.

    The poller holds its checkpoint below the row (`timestamp`, `event_id`) so the rows
    before it flow while it is re-read, and recognises it across polls by `event_id`, or by
    `problem` (where and what, without the row's index, which moves as events arrive) when it
    has no readable id. Data, not wording: nothing parses the message.
    """

    def __init__(
        self,
        message: str,
        *,
        problem: str,
        event_id: int | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.event_id = event_id
        self.timestamp = timestamp


@dataclass(frozen=True)
class EventQuery:
    """One page of the events listing.

    ``timestamp_gte`` only exists in the 3.x API; the 2.x client raises ``BadRequest`` if it
    is given. ``ascending`` orders by timestamp (3.x appends id as tie-breaker; 2.x has none).
    ``asset_uri`` narrows to one asset (resolved to the instance's asset/dataset id).
    """

    limit: int = 100
    offset: int = 0
    ascending: bool = True
    timestamp_gte: datetime | None = None
    asset_uri: str | None = None


@dataclass(frozen=True)
class EventPage:
    events: list[SourceEvent]
    total_entries: int | None
    #: Rows the server returned that failed validation; never silently dropped by callers.
    invalid: list[InvalidRow] = field(default_factory=list)
    #: The server's clock when it answered (its HTTP ``Date`` header, whole seconds, never
    #: later than the true time); None when absent or unreadable. The cursor uses it to stop
    #: re-reading the part of the overlap window that can no longer change.
    server_time: datetime | None = None


@dataclass(frozen=True)
class PostedEvent:
    id: int
    uri: str
    extra: dict[str, Any]
    #: As the server stored it (None: unpartitioned, or a server without partitions).
    partition_key: str | None = None


class AirflowClient(Protocol):
    """What the poller and the replayer need from an Airflow instance."""

    @property
    def api_version(self) -> Literal["v1", "v2"]: ...

    @property
    def page_limit(self) -> int:
        """Largest page the server is known to return (100 unless configured otherwise)."""
        ...

    async def list_events(self, query: EventQuery) -> EventPage: ...

    async def post_event(
        self, uri: str, extra: dict[str, Any], *, partition_key: str | None = None
    ) -> PostedEvent:
        """Create an event for the asset with exactly this URI; AssetNotFound if none.

        ``partition_key`` is set on the new event where the server can take it (Airflow
        3.2+) and silently not sent elsewhere: callers keep it in the marker as well.
        """
        ...

    async def asset_exists(self, uri: str) -> bool: ...

    async def queued_consumers(self, uri: str) -> int:
        """How many consumer DAGs still have an event of this asset queued (not run yet).

        The scheduler deletes a DAG's queue row for the asset when it creates the run that
        consumes it, so 0 means every consumer took the last event (delivery mode
        ``oneRunPerEvent`` waits for it). A paused consumer is never queued. AssetNotFound if
        the target does not know the asset.
        """
        ...

    async def aclose(self) -> None: ...


# -- finished DAG runs and task instances (`spec.dagRuns`; implemented in `runs`) ---------


#: The two completion listings: finished DAG runs, finished task instances.
Listing = Literal["dag_runs", "task_instances"]


@dataclass(frozen=True)
class CompletionQuery:
    """One page of a completions listing: finished at or after `end_date_gte`, in `states`."""

    states: tuple[str, ...]
    end_date_gte: datetime | None = None
    limit: int = 100
    offset: int = 0
    #: Newest end first (``order_by=-end_date``); not for 2.x task instances (no ordering).
    descending: bool = False


@dataclass(frozen=True)
class Completion:
    """A finished DAG run (``task_id`` None) or task instance, as the source reported it."""

    dag_id: str
    run_id: str
    state: str
    end_date: datetime
    logical_date: datetime | None = None
    #: The run's ``conf``; None on task rows (the task listing does not carry it).
    conf: dict[str, Any] | None = None
    task_id: str | None = None
    map_index: int | None = None


@dataclass(frozen=True)
class CompletionPage:
    rows: list[Completion]
    total_entries: int | None
    #: Rows that failed validation: what was wrong, never the row's values.
    invalid: list[str] = field(default_factory=list)


@runtime_checkable
class RunSource(Protocol):
    """What the completions cursor needs from a source client (both versions have it)."""

    @property
    def api_version(self) -> Literal["v1", "v2"]: ...

    @property
    def page_limit(self) -> int: ...

    async def list_dag_runs(self, query: CompletionQuery) -> CompletionPage: ...

    async def list_task_instances(self, query: CompletionQuery) -> CompletionPage: ...

    async def dag_run_conf(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """The ``conf`` of one run, finished or not; None if it does not exist (any more)."""
        ...
