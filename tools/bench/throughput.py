"""(2) Replay throughput against the target's raw ceiling, (3) backlog catch-up, (5) worker RSS.

In one run, on the same target instance:

1. the raw ceiling: a plain httpx loop POSTs to the target at the replayer's concurrency
   (`ReplayerOptions.concurrency`, bounded again by `HttpOptions.max_inflight_writes`), over
   the same assets, with an `extra` shaped like the replayer's; and the same loop one at a
   time, because on the rig's SQLite-backed Airflow concurrency is not free (see
   `bench.prototype`). Each loop is bounded by a count and a time;
2. the backlog: `backlog_events` events created in the source before any worker exists
   (the same loop, one at a time: the fastest way into this source);
3. a worker (`run -f`, Kafka, defaults, ``startFrom`` just before the backlog) starts:
   catch-up = events/s into Kafka (`aas_events_published_total`); replay = events/s written
   to the target (`aas_events_replayed_total`: a deduplicated delivery is no write) in a
   window after catch-up ended, so the poller
   does not share the CPU with the replayer while it is measured; peak RSS (VmHWM) over all;
4. the same with the `bench.prototype` worker as it was before the benchmark's fixes (whole
   overlap window re-read, one page at a time, fixed poll interval), reading the same
   backlog into its own topic: before and after in one run.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_asset_sync.clients.airflow.http import HttpOptions
from airflow_asset_sync.worker.poller import PollPace
from airflow_asset_sync.worker.replayer import ReplayerOptions
from bench.common import Results, Sampler, log, memory, summary
from bench.counted import access_log_times, requests_between
from bench.profiling import Profiler
from bench.stack import Stack, pool
from bench.traffic import post_concurrently
from rig.airflow import AirflowInstance
from rig.sync import SyncProcess

#: Targets from the issue.
REPLAY_RATIO_TARGET = 0.9
CATCHUP_TARGET = 2000.0
WORKER_RSS_TARGET_MIB = 100.0

SOURCE_REQUESTS = "aas_api_request_duration_seconds_count"
PUBLISHED = "aas_events_published_total"
REPLAYED = "aas_events_replayed_total"
DEDUPLICATED = "aas_events_deduplicated_total"
#: The worker before the benchmark's fixes (`bench.prototype`).
BEFORE = {"AAS_BENCH_FULL_WINDOW": "1", "AAS_BENCH_FIXED_POLL": "1"}


def replayer_concurrency() -> int:
    return min(ReplayerOptions().concurrency, HttpOptions().max_inflight_writes)


def marker_like(origin: str, sync: str) -> Callable[[int], dict[str, Any]]:
    """An `extra` shaped like the replayer's: the source extra plus the sync's marker."""

    def extra(i: int) -> dict[str, Any]:
        return {
            "bench": "ceiling",
            "seq": i,
            "airflow_asset_sync": {
                "origin": origin,
                "event_id": 10_000_000 + i,
                "timestamp": datetime.now(UTC).isoformat(),
                "sync": sync,
            },
        }

    return extra


def burst(
    instance: AirflowInstance,
    uris: list[str],
    *,
    count: int,
    concurrency: int,
    deadline_s: float,
    extra: Callable[[int], dict[str, Any]],
) -> dict[str, Any]:
    result = post_concurrently(
        instance, uris, count=count, concurrency=concurrency, deadline_s=deadline_s, extra=extra
    )
    return {
        "posts_planned": count,
        "deadline_s": deadline_s,
        "ok": result.ok,
        "errors": sum(result.errors.values()),
        "error_kinds": result.errors,
        "wall_s": round(result.wall_s, 2),
        "rate": round(result.rate, 1),
        "concurrency": concurrency,
        "request_s": summary(result.durations),
        "per_second": result.per_second,
    }


class MetricsSampler:
    """Scrapes a worker's /metrics every `interval_s` (one scrape serves every series).

    One scraper, not one per metric: each scrape makes the worker render its registry on
    its HTTP thread, which competes with its event loop for the GIL.
    """

    def __init__(self, proc: SyncProcess, *, interval_s: float = 0.25) -> None:
        self._proc = proc
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._sampler = Sampler(self._scrape, interval_s=interval_s)

    def _scrape(self) -> float:
        values: dict[str, float] = {}
        for key, value in self._proc.metrics().items():
            name = key.partition("{")[0]
            values[name] = values.get(name, 0.0) + value
        self.samples.append((time.monotonic(), values))
        return 0.0

    def start(self) -> None:
        self._sampler.start()

    def stop(self) -> None:
        self._sampler.stop()

    def latest(self, name: str) -> float:
        return self.samples[-1][1].get(name, 0.0) if self.samples else 0.0

    def last_time(self) -> float:
        return self.samples[-1][0] if self.samples else time.monotonic()

    def series(self, name: str) -> list[tuple[float, float]]:
        return [(t, v.get(name, 0.0)) for t, v in self.samples]

    def first_reaching(self, name: str, value: float) -> float | None:
        for t, values in self.samples:
            if values.get(name, 0.0) >= value:
                return t
        return None

    def value_at(self, name: str, when: float) -> float:
        found = 0.0
        for t, values in self.samples:
            if t > when:
                break
            found = values.get(name, 0.0)
        return found


def drain(
    stack: Stack,
    *,
    name: str,
    total: int,
    start_from: datetime,
    window_s: float,
    prototype: dict[str, str] | None,
    profiler: Profiler | None,
) -> dict[str, Any]:
    """One worker catching up on the backlog and replaying it; its figures."""
    source, target = stack.airflows("a3s", "a3t")
    proc = stack.sync_process(
        name,
        stack.manifests(
            name,
            source,
            [("t", target)],
            include=pool("backlog"),
            start_from=start_from.isoformat().replace("+00:00", "Z"),
        ),
        prototype=prototype,
    )
    scrape = MetricsSampler(proc)
    rss = Sampler(lambda: memory(proc.server.proc.pid).rss_mib if proc.server.proc else 0.0)
    t_start = time.monotonic()
    wall_start = time.time()
    proc.server.start()
    scrape.start()
    rss.start()
    if profiler is not None:
        profiler.start(proc.server, label=f"{name}-catchup")
    try:
        proc.server.wait_ready(proc.ready, timeout_s=120, what="ready")
        t_ready = time.monotonic()
        deadline = t_start + 600
        while scrape.latest(PUBLISHED) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: catch-up did not finish within 600s")
            time.sleep(0.1)
        t_caught_up = scrape.first_reaching(PUBLISHED, total) or time.monotonic()
        if profiler is not None:
            profiler.stop()
            profiler.start(proc.server, label=f"{name}-replay")
        done_at_catchup = scrape.value_at(REPLAYED, t_caught_up) + scrape.value_at(
            DEDUPLICATED, t_caught_up
        )
        # Counted in the source's access log (the worker is its only client here; a counting
        # proxy's hop would slow the catch-up it measures): whole seconds, so windows are
        # whole seconds too.
        wall_requests = float(math.ceil(time.time()))
        window_end = t_caught_up + window_s
        # The poller keeps its fast pace for `PollPace.hold` after the last new event; the
        # quiet figure starts counting once that is over.
        quiet_from = t_caught_up + PollPace(1.0).hold + 2.0
        quiet: float | None = None  # wall second the quiet window starts
        while (
            time.monotonic() < window_end
            and scrape.latest(REPLAYED) + scrape.latest(DEDUPLICATED) < total
        ):
            if quiet is None and time.monotonic() >= quiet_from:
                quiet = float(math.ceil(time.time()))
            time.sleep(0.1)
        time.sleep(0.3)  # one more scrape
        t_window = scrape.last_time()
        done_at_end = scrape.latest(REPLAYED) + scrape.latest(DEDUPLICATED)
        mem = memory(proc.server.proc.pid) if proc.server.proc else None
        wall_end = float(math.floor(time.time()))
        client_requests = proc.metric(SOURCE_REQUESTS, role="source")
        source_seconds = proc.metric("aas_api_request_duration_seconds_sum", role="source")
        errors = {
            k: v for k, v in proc.metrics().items() if k.startswith("aas_replay_errors_total")
        }
    finally:
        if profiler is not None:
            profiler.stop()
        scrape.stop()
        rss.stop()
        proc.stop()
    time.sleep(1.5)  # the server's log lines of the last second
    logged = access_log_times(source)  # the log read once for the three windows
    source_requests = requests_between(logged, math.floor(wall_start), wall_end)
    after_burst_rate = requests_between(logged, wall_requests, wall_end) / max(
        wall_end - wall_requests, 1.0
    )
    quiet_rate = (
        requests_between(logged, quiet, wall_end) / max(wall_end - quiet, 1.0)
        if quiet is not None and wall_end > quiet
        else None
    )

    first_publish = scrape.first_reaching(PUBLISHED, 1.0) or t_caught_up
    publishing_s = t_caught_up - first_publish
    # Only real writes: a delivery the target already had (deduplicated) costs no POST, and
    # counting it would flatter the ratio to the raw POST ceiling.
    written_in_window = scrape.latest(REPLAYED) - scrape.value_at(REPLAYED, t_caught_up)
    rate = written_in_window / max(t_window - t_caught_up, 1e-3)
    figures = {
        "name": name,
        "prototype": prototype or {},
        "events": total,
        "catchup_from_process_start_s": round(t_caught_up - t_start, 2),
        "process_start_to_ready_s": round(t_ready - t_start, 2),
        "first_to_last_publish_s": round(publishing_s, 2),
        "catchup_rate_from_process_start": round(total / (t_caught_up - t_start), 1),
        # Meaningless when everything went out between two scrapes (a small backlog).
        "catchup_rate_first_to_last_publish": round(total / publishing_s, 1)
        if publishing_s >= 1.0
        else None,
        "source_requests": source_requests,
        "worker_counted_source_requests": client_requests,
        "source_request_mean_s": round(source_seconds / client_requests, 4)
        if client_requests
        else None,
        "source_requests_per_s_after_catchup": round(after_burst_rate, 2),
        "source_requests_per_s_quiet_after_catchup": round(quiet_rate, 2)
        if quiet_rate is not None
        else None,
        "replay_window_s": round(t_window - t_caught_up, 1),
        "replayed_in_window": written_in_window,
        "handled_in_window": done_at_end - done_at_catchup,
        "replayed_total": done_at_end,
        "deduplicated_total": scrape.latest(DEDUPLICATED),
        "replay_rate_in_window": round(rate, 1),
        "replay_errors": errors,
        "rss_mib": round(mem.rss_mib, 1) if mem else None,
        "hwm_mib": round(mem.hwm_mib, 1) if mem else None,
        "sampled_peak_rss_mib": round(max((v for _, v in rss.series), default=0.0), 1),
    }
    series = {
        "published": [(t - t_start, v) for t, v in scrape.series(PUBLISHED)],
        "replayed": [(t - t_start, v) for t, v in scrape.series(REPLAYED)],
        "rss_mib": [(t - t_start, v) for t, v in rss.series],
        "caught_up_s": t_caught_up - t_start,
    }
    log(
        f"{name}: catch-up {figures['catchup_rate_from_process_start']:.0f} events/s from process"
        f" start ({figures['catchup_rate_first_to_last_publish']}/s publishing); replay "
        f"{rate:.1f} events/s; peak RSS {figures['hwm_mib']} MiB"
    )
    return {"figures": figures, "series": series}


def run_drain(
    stack: Stack,
    results: Results,
    *,
    ceiling_posts: int,
    ceiling_deadline_s: float,
    bracket_posts: int,
    backlog_events: int,
    replay_window_s: float,
    measure_ceiling: bool,
    during_backlog: Callable[[], None] | None = None,
    profiler: Profiler | None = None,
) -> None:
    source, target = stack.airflows("a3s", "a3t")
    uris = pool("backlog")
    concurrency = replayer_concurrency()

    ceilings: dict[int, dict[str, Any]] = {}
    if measure_ceiling:
        # One at a time, two (the smallest concurrency), and the replayer's own.
        for c in sorted({1, 2, concurrency}):
            log(f"raw ceiling: up to {ceiling_posts} POSTs to the target, {c} in flight")
            ceilings[c] = burst(
                target,
                uris,
                count=ceiling_posts,
                concurrency=c,
                deadline_s=ceiling_deadline_s,
                # What the replayer sends: a source extra plus the sync's marker.
                extra=marker_like(source.url, "tests/bench-ceiling"),
            )
            log(
                f"raw ceiling at {c} in flight: {ceilings[c]['rate']:.1f} events/s "
                f"({ceilings[c]['errors']} errors, request p99 "
                f"{ceilings[c]['request_s'].get('p99', 0):.3f}s)"
            )
        results.record("replay", raw_ceiling={str(c): v for c, v in ceilings.items()})

    background = None
    if during_backlog is not None:
        background = threading.Thread(target=during_backlog, name="during-backlog")
        background.start()
    start_from = datetime.now(UTC) - timedelta(seconds=1)
    log(f"backlog: {backlog_events} events into the source, one at a time")
    backlog = burst(
        source,
        uris,
        count=backlog_events,
        concurrency=1,
        deadline_s=900,
        extra=lambda i: {"bench": "backlog", "seq": i, "run_id": f"backlog__{i:06d}"},
    )
    results.record("catchup", backlog=backlog)
    if background is not None:
        log("waiting for the section that ran during the backlog")
        background.join()
    total = int(backlog["ok"])

    # The product's worker, then the worker as it was before the fixes, on the same backlog.
    second: tuple[str, dict[str, str] | None] = ("drain-before", BEFORE)

    def bracket() -> float:
        """The raw loop again, briefly, at the replayer's concurrency: the load of other
        work on this machine changes from minute to minute, so each replay window is
        compared with the raw ceiling measured right before and right after it."""
        raw = burst(
            target,
            uris,
            count=bracket_posts,
            concurrency=concurrency,
            deadline_s=12.0,
            extra=marker_like(source.url, "tests/bench-ceiling"),
        )
        return float(raw["rate"])

    runs = {}
    raw_before = bracket()
    for name, prototype in (("drain", None), second):
        runs[name] = drain(
            stack,
            name=name,
            total=total,
            start_from=start_from,
            window_s=replay_window_s,
            prototype=prototype,
            profiler=profiler if name == "drain" else None,
        )
        raw_after = bracket()
        figures = runs[name]["figures"]
        baseline = (raw_before + raw_after) / 2
        figures["raw_before_after"] = [raw_before, raw_after]
        figures["ratio_bracketed"] = (
            round(figures["replay_rate_in_window"] / baseline, 3) if baseline else 0.0
        )
        log(
            f"{name}: raw before/after {raw_before}/{raw_after}/s; "
            f"ratio {figures['ratio_bracketed']}"
        )
        raw_before = raw_after
        results.record("drain", **{name: figures})
    results.series["drain"] = runs["drain"]["series"]
    results.series[second[0]] = runs[second[0]]["series"]

    default, fixed = runs["drain"]["figures"], runs[second[0]]["figures"]
    what = "before the fixes"
    results.record(
        "memory",
        worker_drain={k: default[k] for k in ("rss_mib", "hwm_mib", "sampled_peak_rss_mib")},
        **{
            f"worker_{second[0]}": {
                k: fixed[k] for k in ("rss_mib", "hwm_mib", "sampled_peak_rss_mib")
            }
        },
    )
    publishing = default["catchup_rate_first_to_last_publish"] or 0.0
    results.check(
        "catchup",
        "Backlog catch-up into Kafka (first to last publish)",
        publishing,
        unit="events/s",
        target=f">= {CATCHUP_TARGET:.0f} events/s",
        passed=publishing >= CATCHUP_TARGET,
        note=f"{total} events; counting the worker's start-up "
        f"({default['process_start_to_ready_s']} s to ready) "
        f"{default['catchup_rate_from_process_start']:.0f}/s; {what} "
        f"{fixed['catchup_rate_first_to_last_publish']}/s publishing, "
        f"{fixed['catchup_rate_from_process_start']:.0f}/s from process start",
    )
    if ceilings:
        same = ceilings[concurrency]
        ratio = default["replay_rate_in_window"] / same["rate"] if same["rate"] else 0.0
        results.record(
            "replay",
            ratio_vs_long_ceiling=round(ratio, 3),
            ratio_bracketed=default["ratio_bracketed"],
            ratio_bracketed_second=fixed["ratio_bracketed"],
        )
    for label, fig in (("defaults", default), (second[0], fixed)):
        results.check(
            "replay",
            f"Replayer ({label}) / raw loop at {concurrency} in flight, same target, "
            "raw measured right before and after",
            fig["ratio_bracketed"],
            unit="x",
            target=f">= {REPLAY_RATIO_TARGET}",
            passed=fig["ratio_bracketed"] >= REPLAY_RATIO_TARGET,
            note=f"replayer {fig['replay_rate_in_window']}/s vs raw "
            f"{fig['raw_before_after'][0]}/{fig['raw_before_after'][1]}/s"
            + (
                f"; vs the {ceilings[concurrency]['ok']}-POST ceiling "
                f"{ceilings[concurrency]['rate']}/s: "
                f"{fig['replay_rate_in_window'] / ceilings[concurrency]['rate']:.2f}"
                if ceilings and ceilings[concurrency]["rate"]
                else ""
            ),
        )
    quiet = default["source_requests_per_s_quiet_after_catchup"]
    if quiet is not None:
        results.check(
            "idle",
            "Source load while idle after a burst (the catch-up worker, once its fast pace ended)",
            quiet,
            unit="req/s",
            target="<= 1 req/s",
            passed=quiet <= 1.0,
            note="whole window from catch-up end, fast pace included: "
            f"{default['source_requests_per_s_after_catchup']} req/s; before the fixes every "
            "poll re-read the whole overlap window (a page per 100 events in it): "
            f"{fixed['source_requests_per_s_quiet_after_catchup']} req/s once quiet",
        )
    if default["hwm_mib"] is not None:
        results.check(
            "memory",
            "Worker peak RSS during catch-up and replay (VmHWM)",
            default["hwm_mib"],
            unit="MiB",
            target=f"<= {WORKER_RSS_TARGET_MIB:.0f} MiB",
            passed=default["hwm_mib"] <= WORKER_RSS_TARGET_MIB,
            note=f"{what} {fixed['hwm_mib']} MiB",
        )
