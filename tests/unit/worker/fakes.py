"""In-memory stand-ins for Airflow, the transport, the offset store and the clock.

`FakeAirflow` behaves like the real APIs where the worker's correctness depends on it
(the REST API references of 2.x and 3.x,
https://airflow.apache.org/docs/apache-airflow/2.11.0/stable-rest-api-ref.html and
https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html):

- 2.x (``v1``): no ``timestamp_gte`` (400, like connexion's strict validation), ordering by
  timestamp only and **no tie-breaker**: rows sharing a timestamp come back in a fresh random
  order on every request, which is what an SQL sort without a unique key may do. Page size
  capped at the server's maximum (100 by default); ``limit=0`` means the fallback (100).
- 3.x (``v2``): ``timestamp_gte`` (timezone-aware only), id appended as tie-breaker, cap at
  the maximum; ``limit=0`` returns no rows.
- Both: POST to an unknown asset is a 404 (`AssetNotFound`); the server stamps its own time on
  created events; 2.x always adds ``from_rest_api: true`` to ``extra``, 3.x when extra is sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from airflow_asset_sync.api.events import Envelope, SourceEvent
from airflow_asset_sync.api.status import ReplayStatus, SourceStatus, TargetStatus, WorkerStatus
from airflow_asset_sync.api.transport import Delivery
from airflow_asset_sync.clients.airflow.base import (
    AirflowError,
    AssetNotFound,
    BadRequest,
    EventPage,
    EventQuery,
    InvalidRow,
    PostedEvent,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Version = Literal["v1", "v2"]
InvalidMode = Literal["anonymous", "id", "positioned"]


class FakeAirflow:
    """One Airflow instance: its assets and its events."""

    def __init__(
        self,
        *,
        api_version: Version,
        page_limit: int = 100,
        server_limit: int | None = None,
        seed: int = 0,
        start: datetime = T0,
    ) -> None:
        self.api_version: Version = api_version
        self.page_limit = page_limit
        self.server_limit = server_limit if server_limit is not None else page_limit
        self.rows: list[SourceEvent] = []
        self.assets: dict[str, int] = {}
        self.now = start
        self.rng = random.Random(seed)
        self.invalid_ids: set[int] = set()
        self.invalid_mode: InvalidMode = "id"
        self.list_failures: deque[AirflowError] = deque()
        self.post_failures: deque[AirflowError] = deque()
        #: Raised *after* the event was stored: a timeout on a write that landed.
        self.post_failures_after_write: deque[AirflowError] = deque()
        #: While set to an unset Event, POSTs wait on it (to catch writes in flight).
        self.post_gate: asyncio.Event | None = None
        #: The same for listings (to poke the poller while a read is under way).
        self.list_gate: asyncio.Event | None = None
        #: Called at the start of every listing (e.g. to insert rows mid-walk).
        self.on_list: Callable[[EventQuery], None] | None = None
        self.requests: list[tuple[str, Any]] = []
        #: The server's clock, sent with each listing as its HTTP ``Date`` would be (whole
        #: seconds, rounded down); None: no Date header.
        self.clock: datetime | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        #: Listings in flight now, and the most seen at once.
        self.listing = 0
        self.max_listing = 0
        #: Consumer DAGs scheduled on an asset (unpaused), and the queue rows the scheduler
        #: has not turned into runs yet: each created event queues every consumer of its
        #: asset, as ``register_asset_change`` does; `run_consumers` plays the scheduler.
        self.consumers: dict[str, set[str]] = {}
        self.queued: dict[str, set[str]] = {}
        #: Consumer runs per DAG, and the event ids each one consumed (what was queued).
        self.runs: dict[str, list[list[int]]] = {}
        self._queued_ids: dict[str, list[int]] = {}
        self._next_id = 1

    # -- server side --------------------------------------------------------------------------

    def add_asset(self, uri: str) -> int:
        if uri not in self.assets:
            self.assets[uri] = len(self.assets) + 1
        return self.assets[uri]

    def emit(
        self,
        uri: str,
        *,
        at: datetime | None = None,
        extra: dict[str, Any] | None = None,
        source_dag_id: str | None = "producer",
        name: str | None = None,
        partition_key: str | None = None,
    ) -> SourceEvent:
        """An event as a task outlet creates it (the asset row exists from DAG parsing)."""
        asset_id = self.add_asset(uri)
        if at is None:
            self.now += timedelta(milliseconds=1)
            at = self.now
        event = SourceEvent(
            id=self._next_id,
            uri=uri,
            name=(name or uri) if self.api_version == "v2" else None,
            asset_id=asset_id,
            extra=dict(extra or {}),
            timestamp=at,
            source_dag_id=source_dag_id,
            source_task_id="t" if source_dag_id else None,
            partition_key=partition_key,
        )
        self._next_id += 1
        self.rows.append(event)
        return event

    def add_consumer(self, uri: str, dag_id: str) -> None:
        self.add_asset(uri)
        self.consumers.setdefault(uri, set()).add(dag_id)
        self.runs.setdefault(dag_id, [])

    def run_consumers(self) -> None:
        """One scheduler loop: every queued (DAG, asset) becomes one run, the queue empties."""
        for uri, dags in self.queued.items():
            for dag_id in sorted(dags):
                self.runs[dag_id].append(list(self._queued_ids.get(uri, [])))
            dags.clear()
            self._queued_ids[uri] = []

    def events_of(self, uri: str) -> list[SourceEvent]:
        return [e for e in self.rows if e.uri == uri]

    def client(self) -> FakeClient:
        return FakeClient(self)

    # -- API behaviour --------------------------------------------------------------------------

    def _limit(self, requested: int) -> int:
        if requested < 0:
            raise BadRequest("limit must be >= 0")
        if requested == 0:
            return self.server_limit if self.api_version == "v1" else 0
        return min(requested, self.server_limit)

    def _bad_row(self, event: SourceEvent, index: int) -> InvalidRow:
        where = "GET http://airflow/api/events (HTTP 200)"
        problem = f"{where}: field 'uri' has the wrong type"
        message = f"{where}: event {event.id} row {index}: field 'uri' has the wrong type"
        if self.invalid_mode == "anonymous":
            # A row whose id and timestamp do not parse either.
            return InvalidRow(f"{where}: row {index}: not an object", problem=f"{where}: bad")
        if self.invalid_mode == "id":
            return InvalidRow(message, problem=problem, event_id=event.id)
        # A client that also attaches the timestamp (ours attach the id only: `wire.parse_event`).
        return InvalidRow(message, problem=problem, event_id=event.id, timestamp=event.timestamp)

    def list_events(self, query: EventQuery) -> EventPage:
        if self.on_list is not None:
            self.on_list(query)
        if self.list_failures:
            raise self.list_failures.popleft()
        rows = list(self.rows)
        if query.asset_uri is not None:
            if query.asset_uri not in self.assets:
                raise AssetNotFound(f"asset {query.asset_uri!r} not found")
            rows = [e for e in rows if e.uri == query.asset_uri]
        if self.api_version == "v1":
            if query.timestamp_gte is not None:
                raise BadRequest("Extra query parameter(s) timestamp_gte not in spec")
            # No tie-breaker: equal timestamps in a fresh random order per request.
            keyed = [((e.timestamp, self.rng.random()), e) for e in rows]
            keyed.sort(key=lambda pair: pair[0], reverse=not query.ascending)
            rows = [e for _, e in keyed]
        else:
            if query.timestamp_gte is not None:
                if query.timestamp_gte.tzinfo is None:
                    raise BadRequest("naive datetime is disallowed")
                rows = [e for e in rows if e.timestamp >= query.timestamp_gte]
            rows.sort(key=lambda e: (e.timestamp, e.id), reverse=not query.ascending)
        limit = self._limit(query.limit)
        page = rows[query.offset : query.offset + limit]
        events = [e for e in page if e.id not in self.invalid_ids]
        invalid = [self._bad_row(e, i) for i, e in enumerate(page) if e.id in self.invalid_ids]
        date = self.clock.replace(microsecond=0) if self.clock is not None else None
        return EventPage(events=events, total_entries=len(rows), invalid=invalid, server_time=date)

    def create_event(
        self, uri: str, extra: dict[str, Any], partition_key: str | None = None
    ) -> SourceEvent:
        if uri not in self.assets:
            raise AssetNotFound(f"asset {uri!r} not found")
        stored = dict(extra)
        stored["from_rest_api"] = True  # 2.x always; 3.x because extra is sent
        self.now += timedelta(milliseconds=1)
        # Like the real clients: only a 3.x (here: v2) server keeps a partition key.
        key = partition_key if self.api_version == "v2" else None
        event = self.emit(uri, at=self.now, extra=stored, source_dag_id=None, partition_key=key)
        if self.consumers.get(uri):
            self.queued.setdefault(uri, set()).update(self.consumers[uri])
            self._queued_ids.setdefault(uri, []).append(event.id)
        return event


class FakeClient:
    """The `AirflowClient` protocol over a `FakeAirflow`."""

    def __init__(self, server: FakeAirflow) -> None:
        self.server = server
        self.closed = False

    @property
    def api_version(self) -> Version:
        return self.server.api_version

    @property
    def page_limit(self) -> int:
        return self.server.page_limit

    async def list_events(self, query: EventQuery) -> EventPage:
        server = self.server
        server.requests.append(("list_events", query))
        server.listing += 1
        server.max_listing = max(server.max_listing, server.listing)
        try:
            await asyncio.sleep(0)  # a network round trip is a suspension point
            if server.list_gate is not None:
                await server.list_gate.wait()
            return server.list_events(query)
        finally:
            server.listing -= 1

    async def post_event(
        self, uri: str, extra: dict[str, Any], *, partition_key: str | None = None
    ) -> PostedEvent:
        server = self.server
        server.requests.append(("post_event", uri))
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            await asyncio.sleep(0)
            if server.post_gate is not None:
                await server.post_gate.wait()
            if server.post_failures:
                raise server.post_failures.popleft()
            event = server.create_event(uri, extra, partition_key)
            if server.post_failures_after_write:
                raise server.post_failures_after_write.popleft()
            return PostedEvent(
                id=event.id, uri=event.uri, extra=event.extra, partition_key=event.partition_key
            )
        finally:
            server.in_flight -= 1

    async def asset_exists(self, uri: str) -> bool:
        return uri in self.server.assets

    async def queued_consumers(self, uri: str) -> int:
        server = self.server
        server.requests.append(("queued_consumers", uri))
        await asyncio.sleep(0)
        if server.list_failures:
            raise server.list_failures.popleft()
        if uri not in server.assets:
            raise AssetNotFound(f"asset {uri!r} not found")
        return len(server.queued.get(uri, ()))

    async def aclose(self) -> None:
        self.closed = True


class FakeClock:
    """A clock that moves only when the test says so.

    ``sleep`` parks the caller until `advance` moves time past its deadline, so a test can
    assert what happens *before* a poll interval elapses, without real waiting.
    """

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self._mono = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.sleep_calls: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        self.sleep_calls.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._mono + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    @property
    def sleeping(self) -> list[float]:
        """Remaining time of each parked sleeper."""
        return [deadline - self._mono for deadline, f in self._sleepers if not f.done()]

    async def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._now += timedelta(seconds=seconds)
        for deadline, future in list(self._sleepers):
            if deadline <= self._mono + 1e-9 and not future.done():
                future.set_result(None)
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every ready task run a few steps."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_until(
    condition: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Await a condition that other tasks make true (fails the test after `timeout`)."""
    deadline = time.monotonic() + timeout
    spins = 0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        spins += 1
        # Mostly just yield; back off to real sleeps only if the condition takes a while
        # (a real timer, e.g. a fetch timeout, has to fire).
        await asyncio.sleep(0 if spins < 200 else 0.002)


class FakePublisher:
    """Records what is published; can fail, block, and report keys already held."""

    def __init__(self) -> None:
        self.published: list[Envelope] = []
        self.batches: list[list[Envelope]] = []
        self.failures: deque[Exception] = deque()
        self.keys: set[int] = set()
        self.gate: asyncio.Event | None = None
        self.publishing = False
        self.started = False
        self.stopped = False

    @property
    def ids(self) -> list[int]:
        return [e.event.id for e in self.published]

    async def start(self) -> None:
        self.started = True

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        self.publishing = True
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.failures:
                raise self.failures.popleft()
            self.published.extend(envelopes)
            self.batches.append(list(envelopes))
        finally:
            self.publishing = False

    async def published_keys(self, origin: str) -> set[int]:
        return set(self.keys)

    async def stop(self) -> None:
        self.stopped = True


class MemoryStore:
    """`OffsetStore` in memory, keeping every saved source status for assertions."""

    def __init__(self, status: WorkerStatus | None = None) -> None:
        self.status = status.model_copy(deep=True) if status is not None else WorkerStatus()
        self.source_saves: list[SourceStatus] = []
        self.target_saves: list[TargetStatus] = []
        self.replay_saves: list[ReplayStatus] = []
        self.on_save_source: Callable[[SourceStatus], None] | None = None

    async def load(self, targets: Collection[str] | None = None) -> WorkerStatus:
        if targets is not None:
            self.status.targets = [t for t in self.status.targets if t.name in targets]
        return self.status.model_copy(deep=True)

    async def save_source(self, source: SourceStatus) -> None:
        if self.on_save_source is not None:
            self.on_save_source(source)
        snapshot = source.model_copy(deep=True)
        self.status.source = snapshot
        self.source_saves.append(snapshot)

    async def save_target(self, target: TargetStatus) -> None:
        snapshot = target.model_copy(deep=True)
        self.status.targets = [t for t in self.status.targets if t.name != target.name]
        self.status.targets.append(snapshot)
        self.target_saves.append(snapshot)

    async def save_replay(self, replay: ReplayStatus) -> None:
        snapshot = replay.model_copy(deep=True)
        self.status.replay = snapshot
        self.replay_saves.append(snapshot)


class ListSubscription:
    """A `Subscription` fed by the test, recording fetches and commits."""

    def __init__(self, deliveries: Sequence[Delivery] = ()) -> None:
        self.pending: deque[Delivery] = deque(deliveries)
        self.commits: list[list[Delivery]] = []
        self.fetch_sizes: list[int] = []
        self._added = asyncio.Event()
        self.commit_gate: asyncio.Event | None = None

    def add(self, *deliveries: Delivery) -> None:
        self.pending.extend(deliveries)
        self._added.set()

    @property
    def committed(self) -> list[Delivery]:
        return [d for batch in self.commits for d in batch]

    async def start(self) -> None:
        pass

    async def fetch(self, max_records: int, timeout_s: float) -> list[Delivery]:
        self.fetch_sizes.append(max_records)
        if not self.pending:
            self._added.clear()
            try:
                await asyncio.wait_for(self._added.wait(), timeout_s)
            except TimeoutError:
                return []
        out: list[Delivery] = []
        while self.pending and len(out) < max_records:
            out.append(self.pending.popleft())
        return out

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        if self.commit_gate is not None:
            await self.commit_gate.wait()
        self.commits.append(list(deliveries))

    async def stop(self) -> None:
        pass


def envelope(
    event: SourceEvent, *, origin: str = "http://source:8080", sync: str = "ns/sync"
) -> Envelope:
    return Envelope(sync=sync, origin=origin, event=event)


def deliveries(envelopes: Sequence[Envelope], *, partition: int = 0) -> list[Delivery]:
    return [Delivery(envelope=e, position=(partition, i)) for i, e in enumerate(envelopes)]
