"""(8) Delivery modes per target (issue 14): events/s and consumer runs per event, per mode.

One 3.3 -> 3.3 sync per mode, one after the other in the same run, on the same kind of burst:
`burst` events created in the source as fast as one client can, for a fresh asset with a
consumer DAG in the target. Measured from the target's API: how long from the first event
created until every event of the burst is in the target (events/s = burst / that), and how
many runs the target's scheduler made of them once nothing is queued any more (runs per
event). eachEvent, the default, is the baseline of the same run: oneRunPerEvent trades its
rate for one run per event; coalesce writes one event per window.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Results, log
from bench.stack import Stack, pool
from rig.airflow import AirflowInstance
from rig.sync import SyncProcess, await_delivery

MODES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("eachEvent", {"mode": "eachEvent"}),
    ("oneRunPerEvent", {"mode": "oneRunPerEvent"}),
    ("coalesce", {"mode": "coalesce", "window": "2s"}),
)


def _settle(target: AirflowInstance, dag_id: str, uri: str, timeout_s: float) -> int:
    """Runs of `dag_id` once the scheduler has taken every queued event of `uri`."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = target.dag_runs(dag_id)
        if (runs and not target.queued_dags(uri)) or time.monotonic() > deadline:
            return len(runs)
        time.sleep(0.5)


def run_delivery(stack: Stack, results: Results, *, burst: int) -> None:
    source, target = stack.airflows("a3s", "a3t")
    uris = pool("delivery")
    figures: dict[str, Any] = {}
    for (mode, delivery), uri in zip(MODES, uris, strict=False):
        dag_id = target.add_consumer([uri])
        name = f"delivery-{mode.lower()}"
        docs = stack.manifests(name, source, [("t", target)], include=[uri])
        docs[-1]["spec"]["targets"][0]["delivery"] = delivery
        proc = SyncProcess(stack.workdir / name, docs)
        proc.start()
        try:
            with source.client() as c:
                source.create_event(uri, {"bench": "warm-up"}, c)  # logins, ids, groups
                warm = {e["id"] for e in source.events(uri, c)}
            await_delivery(target, [uri], source.url, warm, timeout_s=180)
            runs_before = _settle(target, dag_id, uri, 120)
            log(f"delivery {mode}: a burst of {burst} events")
            t0 = time.monotonic()
            with source.client() as c:
                ids = {source.create_event(uri, {"seq": i}, c)["id"] for i in range(burst)}
            counts = await_delivery(target, [uri], source.url, ids, timeout_s=60 + 15 * burst)
            wall_s = time.monotonic() - t0
            runs = _settle(target, dag_id, uri, 120) - runs_before
            copies = sum(1 for e in target.events(uri) if "airflow_asset_sync" in e["extra"])
            figures[mode] = {
                "burst": burst,
                "wall_s": round(wall_s, 2),
                "events_per_s": round(burst / wall_s, 2),
                "consumer_runs": runs,
                "runs_per_event": round(runs / burst, 2),
                "target_events": copies - len(warm),
                "duplicates": sum(1 for n in counts.values() if n > 1),
            }
            log(f"delivery {mode}: {figures[mode]}")
        finally:
            proc.stop()
    results.record("delivery", **figures)
    base = figures.get("eachEvent", {})
    for mode, _ in MODES:
        f = figures.get(mode)
        if f is None:
            continue
        want = {"oneRunPerEvent": "1.0", "coalesce": "1/burst"}.get(mode, "")
        results.check(
            "delivery",
            f"{mode}: consumer runs per event",
            f["runs_per_event"],
            unit="runs/event",
            target=want,
            passed=(f["runs_per_event"] == 1.0) if mode == "oneRunPerEvent" else None,
            note=f"{f['consumer_runs']} runs, {f['target_events']} target events for "
            f"{f['burst']} source events, {f['duplicates']} duplicates",
        )
        results.check(
            "delivery",
            f"{mode}: events/s (burst in until all delivered)",
            f["events_per_s"],
            unit="events/s",
            target="",
            passed=None,
            note=f"{f['wall_s']} s; eachEvent in the same run: "
            f"{base.get('events_per_s', float('nan'))} events/s",
        )
