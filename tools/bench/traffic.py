"""Traffic against the rig's Airflows, written against the API docs (not the product's clients).

- `EventWriter` creates source events (one POST each; 3.x asset ids resolved once, so the
  source sees exactly one request per event, as with a real producer);
- `steady` creates events at a fixed rate from a thread, keeping the schedule (a POST that
  runs late does not shift the ones after it) and recording how far it slipped;
- `post_concurrently` is the plain httpx loop: N POSTs, at most C in flight. It measures an
  instance's raw write ceiling, and creates backlogs;
- `collect` lists a 3.x instance's events since a time (paging), for latency and counts.

Latency is taken from Airflow's own row timestamps: both Airflows stamp `timestamp` at
insert with the same host clock, so `target.timestamp - source.timestamp` is the time from
"source event created" to "target event created", with no client-side polling resolution.
The target row commits a few milliseconds after its timestamp (same request), which is the
only bias, and it is against us by that much at most.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from rig.airflow import AirflowInstance

MARKER = "airflow_asset_sync"


def parse_ts(text: str) -> datetime:
    """Airflow timestamps: 2.x `...+00:00`, 3.x `...Z`; both with microseconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class CreatedEvent:
    id: int
    uri: str
    timestamp: datetime
    #: time.time() when the POST returned (the source had committed the event).
    acked: float


def auth_headers(instance: AirflowInstance) -> dict[str, str]:
    with instance.client() as client:
        return {k: v for k, v in client.headers.items() if k.lower() == "authorization"}


class EventWriter:
    """Creates events in one instance; not thread-safe (one per thread)."""

    def __init__(self, instance: AirflowInstance) -> None:
        self.instance = instance
        self.client = instance.client()
        self._ids: dict[str, int] = {}

    def close(self) -> None:
        self.client.close()

    def asset_id(self, uri: str) -> int:
        if uri not in self._ids:
            self._ids[uri] = self.instance.asset_id(uri, self.client)
        return self._ids[uri]

    def body(self, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
        if self.instance.major == 2:
            return {"dataset_uri": uri, "extra": extra}
        return {"asset_id": self.asset_id(uri), "extra": extra}

    @property
    def path(self) -> str:
        return "/api/v1/datasets/events" if self.instance.major == 2 else "/api/v2/assets/events"

    def post(self, uri: str, extra: dict[str, Any]) -> CreatedEvent:
        response = self.client.post(self.path, json=self.body(uri, extra))
        response.raise_for_status()
        row = response.json()
        return CreatedEvent(
            id=int(row["id"]), uri=uri, timestamp=parse_ts(row["timestamp"]), acked=time.time()
        )


@dataclass
class SteadyRun:
    events: list[CreatedEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Seconds each POST started after its slot (0 when on time).
    slips: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def achieved_rate(self) -> float:
        return len(self.events) / self.wall_s if self.wall_s else 0.0


def steady(
    instance: AirflowInstance,
    uris: Sequence[str],
    *,
    count: int,
    rate: float,
    extra: Callable[[int], dict[str, Any]],
    stop: threading.Event | None = None,
) -> SteadyRun:
    """`count` events at `rate` per second, round-robin over `uris` (bounded by count)."""
    writer = EventWriter(instance)
    run = SteadyRun()
    for uri in uris:  # resolve ids before the clock starts
        writer.body(uri, {})
    started = time.monotonic()
    try:
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            slot = started + i / rate
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            run.slips.append(max(0.0, -delay))
            try:
                run.events.append(writer.post(uris[i % len(uris)], extra(i)))
            except httpx.HTTPError as exc:
                run.errors.append(f"{type(exc).__name__}: {exc}"[:200])
    finally:
        run.wall_s = time.monotonic() - started
        writer.close()
    return run


@dataclass
class Burst:
    """The outcome of `post_concurrently`."""

    ok: int
    errors: dict[str, int]
    wall_s: float
    durations: list[float]
    #: (monotonic second since start, completions in it): the rate over time.
    per_second: list[int]
    concurrency: int

    @property
    def rate(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0


def post_concurrently(
    instance: AirflowInstance,
    uris: Sequence[str],
    *,
    count: int,
    concurrency: int,
    extra: Callable[[int], dict[str, Any]],
    timeout_s: float = 15.0,
    deadline_s: float = 600.0,
) -> Burst:
    """The plain httpx loop: `count` POSTs, `concurrency` in flight, one kept-alive client.

    The timeout is the product's (`HttpOptions.timeout_s`), so both sides give up alike.
    """
    writer = EventWriter(instance)
    bodies = {uri: writer.body(uri, {}) for uri in uris}
    headers = auth_headers(instance)
    auth = (instance.username, instance.password) if instance.major == 2 else None
    path = writer.path
    writer.close()

    async def run() -> Burst:
        errors: dict[str, int] = {}
        durations: list[float] = []
        done_at: list[float] = []
        next_index = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        started = time.monotonic()
        async with httpx.AsyncClient(
            base_url=instance.url, headers=headers, auth=auth, timeout=timeout_s, limits=limits
        ) as client:

            async def worker() -> None:
                nonlocal next_index
                while next_index < count and time.monotonic() - started < deadline_s:
                    i = next_index
                    next_index += 1
                    uri = uris[i % len(uris)]
                    body = {**bodies[uri], "extra": extra(i)}
                    t0 = time.monotonic()
                    try:
                        response = await client.post(path, json=body)
                    except httpx.HTTPError as exc:
                        key = type(exc).__name__
                    else:
                        key = "ok" if response.status_code < 300 else f"HTTP {response.status_code}"
                    t1 = time.monotonic()
                    if key == "ok":
                        durations.append(t1 - t0)
                        done_at.append(t1 - started)
                    else:
                        errors[key] = errors.get(key, 0) + 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.monotonic() - started
        per_second = [0] * (int(wall) + 1)
        for t in done_at:
            per_second[int(t)] += 1
        return Burst(
            ok=len(durations),
            errors=errors,
            wall_s=wall,
            durations=durations,
            per_second=per_second,
            concurrency=concurrency,
        )

    return asyncio.run(run())


def collect(
    instance: AirflowInstance, since: datetime, *, asset_id: int | None = None
) -> list[dict[str, Any]]:
    """Every event of a 3.x instance with timestamp >= `since`, oldest first (raw rows)."""
    assert instance.major == 3, "collect() reads the 3.x API (targets here are 3.3)"
    params: dict[str, Any] = {
        "limit": 100,
        "order_by": "timestamp",
        "timestamp_gte": since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    if asset_id is not None:
        params["asset_id"] = asset_id
    rows: list[dict[str, Any]] = []
    with _client(instance) as client:
        while True:
            response = AirflowInstance._get(
                client, "/api/v2/assets/events", params={**params, "offset": len(rows)}
            )
            body = response.json()
            page = body["asset_events"]
            rows.extend(page)
            if not page or len(rows) >= body["total_entries"]:
                return rows


def _client(instance: AirflowInstance, attempts: int = 6) -> httpx.Client:
    """`instance.client()`, retried: a 3.x login is a request too, and a busy SQLite-backed
    API server can stall one for seconds (see `bench.prototype`)."""
    for _ in range(attempts - 1):
        try:
            return instance.client()
        except httpx.HTTPError:
            time.sleep(2.0)
    return instance.client()


@dataclass
class Delivery:
    """Source events matched with their copies in a target, by the sync's marker."""

    latencies: list[float]
    missing: list[int]
    duplicates: int
    #: (source creation time as unix seconds, latency): for a latency-over-time chart.
    timeline: list[tuple[float, float]]


def match_synced(
    created: Sequence[CreatedEvent], target_rows: Sequence[dict[str, Any]], *, sync: str
) -> Delivery:
    by_id = {e.id: e for e in created}
    first: dict[int, datetime] = {}
    duplicates = 0
    for row in target_rows:
        marker = (row.get("extra") or {}).get(MARKER)
        if not isinstance(marker, dict) or marker.get("sync") != sync:
            continue
        event_id = int(marker["event_id"])
        if event_id not in by_id:
            continue
        ts = parse_ts(row["timestamp"])
        if event_id in first:
            duplicates += 1
            first[event_id] = min(first[event_id], ts)
        else:
            first[event_id] = ts
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []
    for event in created:
        if event.id in first:
            lat = (first[event.id] - event.timestamp).total_seconds()
            latencies.append(lat)
            timeline.append((event.timestamp.timestamp(), lat))
    missing = sorted(set(by_id) - set(first))
    return Delivery(latencies=latencies, missing=missing, duplicates=duplicates, timeline=timeline)
