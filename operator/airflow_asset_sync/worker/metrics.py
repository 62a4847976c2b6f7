"""Prometheus metrics of one worker, the HTTP endpoint that serves them, and the probes.

Each `WorkerMetrics` owns a `CollectorRegistry` instead of using the global default one: two
workers in one process (tests, or a future multi-sync worker) then never share or collide on
metric objects.

The endpoint serves ``/metrics``, ``/healthz`` (liveness) and ``/readyz`` (readiness) on one
port from a daemon thread, so probes are answered even while the event loop is busy, which is
exactly what lets the liveness probe detect a stuck loop (see `health`). It also takes
``POST /poke`` from the source's listener plugin (see `poke`); any other method or path is a
4xx, and a poke body is never read beyond `MAX_POKE_BODY` bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Container, Hashable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from airflow_asset_sync.api.events import Envelope
from airflow_asset_sync.clients.airflow.base import (
    AirflowClient,
    CompletionPage,
    CompletionQuery,
    EventPage,
    EventQuery,
    PostedEvent,
    RunSource,
)
from airflow_asset_sync.worker.health import Health

if TYPE_CHECKING:
    from airflow_asset_sync.worker.poke import PokeGate

log = logging.getLogger(__name__)

#: Short, so dashboards and alerts stay readable: `aas_events_replayed_total{target="b"}`.
PREFIX = "aas"

#: Airflow API calls take ~10 ms (3.x) to ~130 ms (2.x) when healthy; timeouts are seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: `asset_lag_seconds` exports only this many assets per target: the ones that lag most. A
#: series per asset would grow with the source's asset count (thousands); ten are enough to
#: name the assets that hold a target back.
ASSET_LAG_TOP = 10

#: The plugin sends an empty body; anything longer is refused (413) unread.
MAX_POKE_BODY = 1024
#: Where pokes go (as `resources.naming.POKE_PATH`; the worker layer does not import it).
POKE_PATH = "/poke"


class WorkerMetrics:
    """Every metric the worker exports, registered in its own registry."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Source side.
        self.events_polled = Counter(
            f"{PREFIX}_events_polled", "New source events read and handled", registry=r
        )
        self.events_published = Counter(
            f"{PREFIX}_events_published", "Source events published to the transport", registry=r
        )
        self.completions_published = Counter(
            f"{PREFIX}_completions_published",
            "DAG-run and task completions (spec.dagRuns) published as asset events, by kind"
            " (dag_run, task)",
            ["kind"],
            registry=r,
        )
        self.completion_poll_errors = Counter(
            f"{PREFIX}_completion_poll_errors",
            "Failed reads of the source's completed DAG runs and task instances (spec.dagRuns)",
            registry=r,
        )
        self.events_filtered = Counter(
            f"{PREFIX}_events_filtered",
            "Source events not published: reason=filter (spec.assets), synced (a copy written "
            "by a sync that no target needs: loop prevention), already_published (in the "
            "transport after a restart)",
            ["reason"],
            registry=r,
        )
        self.copies_forwarding = Counter(
            f"{PREFIX}_copies_forwarding",
            "Source events that were copies written by a sync, by what the poller did: "
            "decision=forwarded (published for the targets not on its path), path (every "
            "target already had it), hop_limit (it would pass spec.maxHops)",
            ["decision"],
            registry=r,
        )
        self.events_invalid = Counter(
            f"{PREFIX}_events_invalid",
            "Source rows that kept failing validation and were skipped",
            registry=r,
        )
        self.events_redacted = Counter(
            f"{PREFIX}_events_redacted",
            "Source events published with extra values the source's Airflow had masked to "
            "'***' (sensitive-looking keys): the target gets the mask, not the value",
            registry=r,
        )
        self.source_gaps = Counter(
            f"{PREFIX}_source_gaps",
            "Times the source's history was found purged past the checkpoint (airflow db "
            "clean): events in between may never have been read",
            registry=r,
        )
        self.poll_errors = Counter(
            f"{PREFIX}_poll_errors", "Failed poll iterations", ["kind"], registry=r
        )
        self.pokes = Counter(
            f"{PREFIX}_pokes",
            "Poke requests from the source's listener plugin by result: accepted, "
            "unauthorized (no bearer token), forbidden (wrong token), rate_limited, disabled "
            "(no spec.source.push), bad_request (wrong method or body)",
            ["result"],
            registry=r,
        )
        self.poke_polls = Counter(
            f"{PREFIX}_poke_polls",
            "Polls started early because of pokes (one per wake, however many pokes)",
            registry=r,
        )
        self.last_successful_poll = Gauge(
            f"{PREFIX}_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll",
            registry=r,
        )
        # Target side.
        self.events_replayed = Counter(
            f"{PREFIX}_events_replayed", "Events written to a target", ["target"], registry=r
        )
        self.events_skipped = Counter(
            f"{PREFIX}_events_skipped",
            "Deliveries committed without a write: reason=unknown_asset (policy skip), "
            "foreign (not an airflow-asset-sync message), parked_expired (parked too long), "
            "on_path (a forwarded copy this target already had: it is on the copy's path)",
            ["target", "reason"],
            registry=r,
        )
        self.events_deduplicated = Counter(
            f"{PREFIX}_events_deduplicated",
            "Deliveries not written because the target already had them",
            ["target"],
            registry=r,
        )
        self.events_other_path = Counter(
            f"{PREFIX}_events_other_path",
            "Forwarded deliveries not written because the target already had a copy of the "
            "same origin event that came by another path (also in events_deduplicated)",
            ["target"],
            registry=r,
        )
        self.events_failed = Counter(
            f"{PREFIX}_events_failed",
            "Events the target kept rejecting (4xx), given up, committed and logged",
            ["target"],
            registry=r,
        )
        self.unknown_asset_retries = Counter(
            f"{PREFIX}_unknown_asset_retries",
            "Writes refused because the target does not know the asset (policy retry)",
            ["target"],
            registry=r,
        )
        self.replay_errors = Counter(
            f"{PREFIX}_replay_errors",
            "Failed target or transport operations by kind",
            ["target", "kind"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            f"{PREFIX}_lag_seconds",
            "Now minus the source time of the oldest event being replayed; 0 when idle",
            ["target"],
            registry=r,
        )
        self.parked_events = Gauge(
            f"{PREFIX}_parked_events",
            "Events parked because the target does not know their asset yet (policy retry), "
            "or held for a consumer (delivery oneRunPerEvent)",
            ["target"],
            registry=r,
        )
        self.awaiting_consumer_events = Gauge(
            f"{PREFIX}_awaiting_consumer_events",
            "Events held (delivery oneRunPerEvent) until a consumer DAG of the target takes "
            "the asset's previous event; also counted in parked_events",
            ["target"],
            registry=r,
        )
        self.events_coalesced = Counter(
            f"{PREFIX}_events_coalesced",
            "Source events written inside another event's target event (delivery coalesce)",
            ["target"],
            registry=r,
        )
        self.parked_oldest_age = Gauge(
            f"{PREFIX}_parked_oldest_age_seconds",
            "Seconds since the oldest parked event of the target was parked; 0 when none",
            ["target"],
            registry=r,
        )
        # One writer per sync (see `lease`); stays 0 standalone, where there is no Lease.
        self.lease_held = Gauge(
            f"{PREFIX}_lease_held",
            "1 while this worker holds its sync's Lease and may write to targets",
            registry=r,
        )
        self.asset_lag_seconds = Gauge(
            f"{PREFIX}_asset_lag_seconds",
            f"aas_lag_seconds per asset, for the {ASSET_LAG_TOP} assets of the target that "
            "lag most (others have no series); gone when the target is idle",
            ["target", "asset"],
            registry=r,
        )
        self.api_latency = Histogram(
            f"{PREFIX}_api_request_duration_seconds",
            "Airflow API call latency; role is source or target:<name>",
            ["role", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 if absent); for tests and debugging."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else got

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class AssetLag:
    """The per-asset lag of one target, exported for its `top` most lagging assets only.

    Fed by the replayer alongside its target-wide lag: `pending` names each delivery of a
    batch as the batch starts, `update` gets the keys of the deliveries still pending whenever
    the replayer recomputes its lag (`Replayer._set_lag`). The same rule as
    `aas_lag_seconds`, per asset: now minus the source time of the asset's oldest delivery
    still pending or just done; an asset with neither keeps its last value. The next batch
    starts afresh (only its assets), and an idle target (nothing fetched) has none. The series
    of an asset that leaves the top `top` is removed, so a worker exports at most `top` per
    target, whatever the number of assets.
    """

    def __init__(self, metrics: WorkerMetrics, *, target: str, top: int = ASSET_LAG_TOP) -> None:
        self._gauge = metrics.asset_lag_seconds
        self._target = target
        self._top = top
        #: The current batch's deliveries not seen done (asset, source time), and each of its
        #: assets' lag. O(batch) per update, as the replayer's own `min` over its pending.
        self._open: dict[Hashable, tuple[str, datetime]] = {}
        self._lag: dict[str, float] = {}
        #: True once `update` ran: the next `pending` starts a new batch.
        self._updated = True
        self._shown: set[str] = set()

    def pending(self, envelope: Envelope, asset: str) -> None:
        """A delivery of `asset` is pending; the first one after an `update` starts a batch."""
        if self._updated:
            self._open, self._lag, self._updated = {}, {}, False
        self._open[envelope.marker().key] = (asset, envelope.event.timestamp)

    def update(self, pending: Container[Hashable], now: datetime, *, idle: bool) -> None:
        """Recompute from the keys still pending in the replayer; `idle` clears every asset."""
        self._updated = True
        if idle:
            self._open, self._lag = {}, {}
        oldest: dict[str, datetime] = {}
        done: list[Hashable] = []
        for key, (asset, at) in self._open.items():
            if key not in pending:
                done.append(key)  # done since the last update: counts this once
            if asset not in oldest or at < oldest[asset]:
                oldest[asset] = at
        for key in done:
            del self._open[key]
        for asset, at in oldest.items():
            self._lag[asset] = max(0.0, (now - at).total_seconds())
        self._publish()

    def top(self) -> dict[str, float]:
        """The exported assets and their lag (largest first; ties by URI)."""
        ranked = sorted(self._lag.items(), key=lambda item: (-item[1], item[0]))
        return dict(ranked[: self._top])

    def _publish(self) -> None:
        shown = self.top()
        for asset in self._shown - shown.keys():
            self._gauge.remove(self._target, asset)
        for asset, lag in shown.items():
            self._gauge.labels(target=self._target, asset=asset).set(lag)
        self._shown = set(shown)


Method = Literal[
    "list_events",
    "post_event",
    "asset_exists",
    "queued_consumers",
    "list_dag_runs",
    "list_task_instances",
    "dag_run_conf",
]


class InstrumentedClient:
    """An `AirflowClient` that times every call into `api_request_duration_seconds`.

    `role` is ``source`` or ``target:<name>``: a handful of label values per worker.
    """

    def __init__(self, inner: AirflowClient, *, role: str, metrics: WorkerMetrics) -> None:
        self._inner = inner
        self._role = role
        self._metrics = metrics

    @contextmanager
    def _timed(self, method: Method) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.api_latency.labels(role=self._role, method=method).observe(elapsed)

    @property
    def api_version(self) -> Literal["v1", "v2"]:
        return self._inner.api_version

    @property
    def page_limit(self) -> int:
        return self._inner.page_limit

    async def list_events(self, query: EventQuery) -> EventPage:
        with self._timed("list_events"):
            return await self._inner.list_events(query)

    async def post_event(
        self, uri: str, extra: dict[str, Any], *, partition_key: str | None = None
    ) -> PostedEvent:
        with self._timed("post_event"):
            return await self._inner.post_event(uri, extra, partition_key=partition_key)

    async def asset_exists(self, uri: str) -> bool:
        with self._timed("asset_exists"):
            return await self._inner.asset_exists(uri)

    async def queued_consumers(self, uri: str) -> int:
        with self._timed("queued_consumers"):
            return await self._inner.queued_consumers(uri)

    def _runs(self) -> RunSource:
        inner = self._inner
        if not isinstance(inner, RunSource):
            raise TypeError(f"{type(inner).__name__} cannot list DAG runs (spec.dagRuns)")
        return inner

    async def list_dag_runs(self, query: CompletionQuery) -> CompletionPage:
        with self._timed("list_dag_runs"):
            return await self._runs().list_dag_runs(query)

    async def list_task_instances(self, query: CompletionQuery) -> CompletionPage:
        with self._timed("list_task_instances"):
            return await self._runs().list_task_instances(query)

    async def dag_run_conf(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        with self._timed("dag_run_conf"):
            return await self._runs().dag_run_conf(dag_id, run_id)

    async def aclose(self) -> None:
        await self._inner.aclose()


class MetricsServer:
    """``/metrics``, ``/healthz``, ``/readyz`` on one port, served from a daemon thread."""

    def __init__(
        self,
        *,
        metrics: WorkerMetrics,
        health: Health,
        host: str,
        port: int,
        poke: PokeGate | None = None,
    ) -> None:
        handler = _handler(metrics, health, poke)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    *,
    metrics: WorkerMetrics,
    health: Health,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104  probes and scrapes reach the pod IP, not loopback
    poke: PokeGate | None = None,
) -> MetricsServer:
    """Start serving; ``port=0`` picks a free port (see `MetricsServer.port`)."""
    server = MetricsServer(metrics=metrics, health=health, host=host, port=port, poke=poke)
    server.start()
    log.info("metrics and probes listening", extra={"port": server.port})
    return server


def _handler(
    metrics: WorkerMetrics, health: Health, poke: PokeGate | None
) -> type[BaseHTTPRequestHandler]:
    from airflow_asset_sync.worker.poke import STATUS

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != POKE_PATH:
                self._send(404, b"not found\n", "text/plain")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_POKE_BODY:
                metrics.pokes.labels(result="bad_request").inc()
                self.close_connection = True  # the body is left unread
                self._send(413 if length > 0 else 400, b"bad poke\n", "text/plain")
                return
            self.rfile.read(length)  # ignored: a poke carries nothing the sync trusts
            if poke is None:
                metrics.pokes.labels(result="disabled").inc()
                self._send(404, b"pokes are not enabled\n", "text/plain")
                return
            result = poke.handle(self.headers.get("Authorization"))
            headers = {"WWW-Authenticate": "Bearer"} if result == "unauthorized" else {}
            if result == "rate_limited":
                headers["Retry-After"] = "1"
            self._send(STATUS[result], f"{result}\n".encode(), "text/plain", headers)

        def _refuse_method(self) -> None:
            if self.path.split("?", 1)[0] == POKE_PATH:
                metrics.pokes.labels(result="bad_request").inc()
            self.close_connection = True
            self._send(405, b"method not allowed\n", "text/plain", {"Allow": "GET, POST"})

        # Any other method is a 405, not http.server's 501: a client error, said as one.
        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = (
            _refuse_method
        )

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == POKE_PATH:
                metrics.pokes.labels(result="bad_request").inc()
                self._send(405, b"POST a poke\n", "text/plain", {"Allow": "POST"})
            elif path == "/metrics":
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                self._probe(*health.live())
            elif path == "/readyz":
                self._probe(*health.ready())
            else:
                self._send(404, b"not found\n", "text/plain")

        def _probe(self, ok: bool, reason: str) -> None:
            self._send(200 if ok else 503, f"{reason}\n".encode(), "text/plain")

        def _send(
            self,
            code: int,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes hit every few seconds; access lines would drown the worker's own logs."""

    return Handler
