"""(1) End-to-end latency: source event created -> created in the target, at a steady rate.

One `run -f` worker per run, through Kafka (the production path), at the product's defaults
unless the run is a named variant (another ``pollInterval``, or a `bench.prototype` switch).
Before the clock starts, a few warm-up events cross, so the figures exclude connecting,
logging in, resolving asset ids and joining the consumer group (reported apart).

While events are delivered, the bench watches the worker's own counter
(`aas_events_replayed_total`) rather than the target: reading the target would add load to
exactly the instance being measured. The target's events are listed once, at the end.

When a run cannot keep up, the wait is bounded (`DELIVERY_TIMEOUT_S` after the last event
was created). Events not delivered by then are *censored*: they count with their age at the
cut-off, so a percentile that lands on one is a lower bound, and the report says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import Results, log, memory, percentile, summary
from bench.counted import CountedSource
from bench.profiling import Profiler
from bench.stack import Stack, pool
from bench.traffic import CreatedEvent, Delivery, collect, match_synced, steady
from rig.airflow import AirflowInstance
from rig.sync import SyncProcess

WARMUP_EVENTS = 3
#: How long delivery may go on after the last event was created.
DELIVERY_TIMEOUT_S = 60.0
REPLAYED = "aas_events_replayed_total"


@dataclass(frozen=True)
class LatencyRun:
    key: str
    label: str
    source: str
    target: str
    assets: str
    poll_interval: str | None = None
    #: `bench.prototype` switches; None runs the product itself.
    prototype: dict[str, str] | None = None
    #: Events in this run (None: the profile's count for its kind).
    count: int | None = None
    #: Whether this run is judged against the issue's targets (the defaults are).
    judged: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: Also stream events of one asset the target never knows (1 in 11 events): they are
    #: parked (`onUnknownAsset: retry`, the default), and the figures are the known assets'.
    parked_asset: bool = False


def run_latency(
    stack: Stack,
    results: Results,
    run: LatencyRun,
    *,
    count: int,
    rate: float,
    profiler: Profiler | None = None,
) -> dict[str, Any]:
    source, target = stack.airflows(run.source, run.target)
    uris = pool(run.assets)
    name = f"lat-{run.key}"
    parked: list[str] = []
    if run.parked_asset:
        parked = [f"s3://aas-bench/parked/{name}"]
        source.add_assets(parked)  # the source knows it; the target never will
    # The worker reaches the source through a counting proxy: the request figure is what
    # the source receives (logins, retries), not what the client counted (`bench.counted`).
    counted = CountedSource(source).start()
    proc = stack.sync_process(
        name,
        counted.route(
            stack.manifests(
                name,
                source,
                [("t", target)],
                include=uris + parked,
                poll_interval=run.poll_interval,
            )
        ),
        prototype=run.prototype,
    )
    sync_ref = f"tests/{name}"
    try:
        proc.start()
        warm = _warm_up(proc, source, target, uris, sync_ref)
        since = datetime.now(UTC) - timedelta(seconds=1)
        replayed_before = proc.metric(REPLAYED)
        requests_before = counted.requests()
        t0 = time.monotonic()
        if profiler is not None:
            profiler.start(proc.server, label=name)
        # With a parked asset the known assets get the same stream as without one, and the
        # parked asset's events come on top (every 11th).
        order = uris + parked
        total = count * len(order) // len(uris)
        total_rate = rate * len(order) / len(uris)
        log(f"{run.label}: {total} events at {total_rate:g}/s ({count} on known assets)")
        created = steady(
            source,
            order,
            count=total,
            rate=total_rate,
            extra=lambda i: {"bench": name, "seq": i},
        )
        if parked:
            created.events = [e for e in created.events if e.uri not in parked]
        t_created = time.monotonic()
        want = replayed_before + len(created.events)
        while proc.metric(REPLAYED) < want and time.monotonic() - t_created < DELIVERY_TIMEOUT_S:
            time.sleep(0.5)
        cutoff = datetime.now(UTC)
        active_s = time.monotonic() - t0
        if profiler is not None:
            profiler.stop()
        source_requests = counted.requests() - requests_before
        errors = _errors(proc)
        mem = memory(proc.server.proc.pid) if proc.server.proc else None
        delivery = match_synced(created.events, collect(target, since), sync=sync_ref)
        stats, censored = _censored_summary(delivery, created.events, cutoff)
        figures: dict[str, Any] = {
            "label": run.label,
            "judged": run.judged,
            "poll_interval": run.poll_interval or "default (1s)",
            "prototype": run.prototype or {},
            "events_created": len(created.events),
            "create_errors": len(created.errors),
            "achieved_rate": round(created.achieved_rate, 2),
            "max_create_slip_s": round(max(created.slips, default=0.0), 3),
            "delivered": len(delivery.latencies),
            "undelivered_at_cutoff": len(delivery.missing),
            "cutoff_s_after_last_created": DELIVERY_TIMEOUT_S,
            "duplicates": delivery.duplicates,
            "latency_s": stats,
            "lower_bounds": censored,
            "delivered_latency_s": summary(delivery.latencies),
            "warmup_latency_s": warm,
            "source_requests_per_s_under_load": round(source_requests / active_s, 2),
            "worker_errors": errors,
            "worker_rss_mib": round(mem.rss_mib, 1) if mem else None,
            "worker_hwm_mib": round(mem.hwm_mib, 1) if mem else None,
            "parked_events": proc.metric("aas_parked_events") if parked else None,
        }
        results.record("latency", **{run.key: figures})
        results.series.setdefault("latency", {})[run.key] = {
            "label": run.label,
            "latencies": delivery.latencies,
            "timeline": delivery.timeline,
        }
        log(
            f"{run.label}: p50 {_show(stats, 'p50', censored)} p95 {_show(stats, 'p95', censored)}"
            f" p99 {_show(stats, 'p99', censored)} ({len(delivery.latencies)}/"
            f"{len(created.events)} delivered, {delivery.duplicates} duplicates, errors {errors})"
        )
        return figures
    finally:
        if profiler is not None:
            profiler.stop()
        proc.stop()
        counted.stop()


def _show(stats: dict[str, float], q: str, censored: list[str]) -> str:
    value = stats.get(q, float("nan"))
    return f"{'>=' if q in censored else ''}{value:.3f}s"


def _censored_summary(
    delivery: Delivery, created: list[CreatedEvent], cutoff: datetime
) -> tuple[dict[str, float], list[str]]:
    """Percentiles over every created event; undelivered ones at their age at the cut-off.

    Returns the summary and the names of the percentiles that are only lower bounds (they
    landed on, or above, a censored value).
    """
    missing = set(delivery.missing)
    ages = [(cutoff - e.timestamp).total_seconds() for e in created if e.id in missing]
    values = list(delivery.latencies) + ages
    stats = summary(values)
    if not ages:
        return stats, []
    smallest_censored = min(ages)
    bounds = [
        q
        for q, p in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("max", 100))
        if percentile(values, p) >= smallest_censored
    ]
    return stats, bounds


def _errors(proc: SyncProcess) -> dict[str, float]:
    """Replay errors and poll errors the worker counted, by kind."""
    out: dict[str, float] = {}
    for key, value in proc.metrics().items():
        name, _, labels = key.partition("{")
        if name in ("aas_replay_errors_total", "aas_poll_errors_total") and value:
            kind = labels.split('kind="', 1)[1].split('"', 1)[0] if 'kind="' in labels else "?"
            out[f"{name.removeprefix('aas_').removesuffix('_total')}:{kind}"] = value
    return out


def _warm_up(
    proc: SyncProcess,
    source: AirflowInstance,
    target: AirflowInstance,
    uris: list[str],
    sync_ref: str,
) -> list[float]:
    """A few events crossing before the clock starts; returns their latencies."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = steady(
        source, uris, count=WARMUP_EVENTS, rate=2.0, extra=lambda i: {"bench": "warm-up"}
    )
    deadline = time.monotonic() + 180
    while proc.metric(REPLAYED) < len(created.events):
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up events were not replayed within 180s")
        time.sleep(0.5)
    delivery = match_synced(created.events, collect(target, since), sync=sync_ref)
    return [round(x, 3) for x in delivery.latencies]
