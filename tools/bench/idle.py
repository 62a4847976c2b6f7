"""(4) Source API cost while idle: requests per minute against the source, 1 vs 5 targets.

Four workers run side by side on idle sources (a 3.3 and a 2.11 source, each with 1 and
with 5 targets; the targets are names for the same 3.3 instance, which costs the source
nothing either way). Each worker reaches its source through a counting proxy of its own
(`bench.counted`), so the source's requests are counted as the source receives them, logins
and retries included, and running the workers together does not mix counts; the worker's
own count (`aas_api_request_duration_seconds_count`) is recorded beside it. The window
opens after every worker is ready (start-up reads are not idle load).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Results, log
from bench.counted import CountedSource
from bench.stack import Stack

IDLE_TARGET_PER_S = 1.0
#: "The same for 1 and 5 targets": within this relative difference.
SAME_TOLERANCE = 0.05

COUNT = "aas_api_request_duration_seconds_count"


def run_idle(stack: Stack, results: Results, *, window_s: float) -> None:
    a2, a3s, a3t = stack.airflows("a2", "a3s", "a3t")
    include = ["s3://aas-bench-idle/*"]  # matches nothing: the sources stay idle
    cases = {
        "3.3-1t": (a3s, 1),
        "3.3-5t": (a3s, 5),
        "2.11-1t": (a2, 1),
        "2.11-5t": (a2, 5),
    }
    procs = {}
    counted: dict[str, CountedSource] = {}
    try:
        for key, (source, n) in cases.items():
            targets = [(f"t{i}", a3t) for i in range(1, n + 1)]
            name = f"idle-{key.replace('.', '')}"
            counted[key] = CountedSource(source).start()
            docs = counted[key].route(stack.manifests(name, source, targets, include=include))
            procs[key] = stack.sync_process(name, docs).start()
        time.sleep(3.0)  # past the first poll of each
        before = {k: _counts(p, counted[k]) for k, p in procs.items()}
        t0 = time.monotonic()
        log(f"idle: counting source requests for {window_s:.0f}s")
        time.sleep(window_s)
        after = {k: _counts(p, counted[k]) for k, p in procs.items()}
        elapsed = time.monotonic() - t0
    finally:
        for proc in procs.values():
            proc.stop()
        for proxy in counted.values():
            proxy.stop()

    figures: dict[str, Any] = {}
    for key in cases:
        source_n = after[key]["source"] - before[key]["source"]
        target_n = after[key]["targets"] - before[key]["targets"]
        figures[key] = {
            "window_s": round(elapsed, 1),
            "source_requests": source_n,
            "source_requests_per_min": round(source_n / elapsed * 60, 1),
            "source_requests_per_s": round(source_n / elapsed, 3),
            "target_requests": target_n,
            "worker_counted_source_requests": after[key]["worker"] - before[key]["worker"],
        }
    results.record("idle", **figures)
    for version in ("3.3", "2.11"):
        one, five = figures[f"{version}-1t"], figures[f"{version}-5t"]
        results.check(
            "idle",
            f"Idle source load, {version} source, 1 target",
            one["source_requests_per_s"],
            unit="req/s",
            target=f"<= {IDLE_TARGET_PER_S:g} req/s",
            passed=one["source_requests_per_s"] <= IDLE_TARGET_PER_S,
            note=f"{one['source_requests_per_min']}/min",
        )
        # One-sided: fewer requests with 5 targets (polls that took longer) cost nothing.
        diff = (five["source_requests_per_s"] - one["source_requests_per_s"]) / max(
            one["source_requests_per_s"], 1e-9
        )
        results.check(
            "idle",
            f"Idle source load, {version} source, 5 targets (same as 1?)",
            five["source_requests_per_s"],
            unit="req/s",
            target=f"<= {IDLE_TARGET_PER_S:g} req/s, <= {SAME_TOLERANCE:.0%} above 1 target",
            passed=five["source_requests_per_s"] <= IDLE_TARGET_PER_S and diff <= SAME_TOLERANCE,
            note=f"{five['source_requests_per_min']}/min; {diff:+.1%} vs 1 target",
        )
    log("idle: " + ", ".join(f"{k} {v['source_requests_per_min']}/min" for k, v in figures.items()))


def _counts(proc: Any, counted: CountedSource) -> dict[str, float]:
    """Source requests at the proxy; the worker's own counts (targets: not a source cost)."""
    worker = proc.metric(COUNT, role="source")
    total = proc.metric(COUNT)
    return {"source": counted.requests(), "worker": worker, "targets": total - worker}
