"""(7) Push-assisted polling (issue 13): the worker with and without pokes, and the plain
listener -> REST recipe, on the same events, in the same run.

Per source (2.11 -> 3.3 and 3.3 -> 3.3, each source an Airflow of its own, started here and
stopped at the end, with the listener plugin (`rig.listener`) and the recipe
(`bench.recipe_plugin`) both installed), three things copy every event of the section's
pool assets into the same 3.3 target:

- `push-<key>`: a worker with `spec.source.push`, poked by the plugin;
- `poll-<key>`: the same worker without push (`pollInterval: 1s`, the product's default);
- the recipe: a listener plugin in the source that POSTs each event to the target itself.

So each event gives three latencies (source row timestamp -> target row timestamp), and a
ratio needs no second run on a machine whose load drifts. The phases, in order:

1. sparse: one event every `push_gap_s` (each the first after a quiet spell). Gaps longer
   than the poller's active hold (10 s after an event, `PollPace`) make the worker without
   pokes wait for its idle `pollInterval`; shorter ones find it at the active pace (0.2 s);
2. bursts: `push_burst` events at once (4 in flight), `push_bursts` times, a quiet spell
   before each;
3. outage (3.3 -> 3.3 only: the target is shared, once is enough): events every 5 s while
   the target's API server is stopped for `push_outage_s`, a few before and after; counted
   by marker what reached the target once it is back;
4. idle: the worker without push stopped, nothing made for `push_idle_s`: the source's
   requests counted in the source's own access log (the only client left is the pushing
   worker), beside the worker's own count;
5. restart: the pushing worker SIGKILLed, an event made, a new worker process started on
   the same state: seconds from the kill to that event's copy in the target.

Where the time goes for 2.11: the worker's own timing of its source reads (mean seconds per
request, `aas_api_request_duration_seconds`) is reported beside the latencies; 2.11's one
gunicorn sync worker answers a read in several times what 3.3 takes.
"""

from __future__ import annotations

import random
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import Profile, Results, log, summary
from bench.counted import CountedSource, access_log_times, requests_between
from bench.latency import _errors as worker_errors
from bench.stack import Stack, pool
from bench.traffic import CreatedEvent, Delivery, EventWriter, collect, match_synced, parse_ts
from rig.airflow import AIRFLOW2, AIRFLOW3, AirflowInstance
from rig.listener import install_plugin, plugin_env, with_push
from rig.procs import free_port
from rig.sync import SyncProcess

REPLAYED = "aas_events_replayed_total"
SOURCE_REQUESTS = "aas_api_request_duration_seconds_count"
SOURCE_SECONDS = "aas_api_request_duration_seconds_sum"
RECIPE = Path(__file__).with_name("recipe_plugin.py")
#: The poller's active hold after an event (`PollPace`): a quiet spell longer than this
#: puts the worker without pokes back on its idle `pollInterval`.
ACTIVE_HOLD_S = 10.0
OUTAGE_GAP_S = 5.0
MODES = ("push", "poll", "recipe")


def _pushing_source(
    version: str, workdir: Path, port: int, token: str, target: AirflowInstance, tag: str
) -> AirflowInstance:
    site = install_plugin(version, workdir / "plugin")
    home = workdir / "home"
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    shutil.copy(RECIPE, home / "plugins" / "aas_bench_recipe.py")
    instance = AirflowInstance(
        version=version,
        home=home,
        extra_env={
            **plugin_env(site, url=f"http://127.0.0.1:{port}/poke", token=token),
            "AAS_RECIPE_TARGET_URL": target.url,
            "AAS_RECIPE_USERNAME": target.username,
            "AAS_RECIPE_PASSWORD": target.password,
            "AAS_RECIPE_TAG": tag,
            "AAS_RECIPE_PAUSE_FILE": str(workdir / "recipe-paused"),
        },
    )
    instance.start()
    return instance


@dataclass
class Made:
    """Events made in one phase, each with the unique nonce its extra carries."""

    events: list[CreatedEvent] = field(default_factory=list)
    nonces: dict[str, CreatedEvent] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    #: POSTs answered 5xx and sent again (3.3 on SQLite: "database is locked" when
    #: several writes meet; the event was not made, so sending it again duplicates nothing).
    retried: int = 0
    errors: list[str] = field(default_factory=list)

    def post(self, writer: EventWriter, uri: str, phase: str, seq: int) -> CreatedEvent:
        nonce = secrets.token_hex(6)
        for attempt in range(6):
            try:
                event = writer.post(uri, {"bench": phase, "seq": seq, "nonce": nonce})
                break
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code < 500 or attempt == 5:
                    raise
                with self.lock:
                    self.retried += 1
                time.sleep(0.2 * (attempt + 1))
        with self.lock:
            self.events.append(event)
            self.nonces[nonce] = event
        return event

    def add(self, other: Made) -> None:
        self.events += other.events
        self.nonces.update(other.nonces)
        self.retried += other.retried
        self.errors += other.errors


@dataclass
class Pair:
    """One source with its two workers and the recipe, for the phases."""

    key: str
    label: str
    source: AirflowInstance
    target: AirflowInstance
    uris: list[str]
    names: dict[str, str]
    procs: dict[str, SyncProcess]
    tag: str
    writer: EventWriter
    #: Each worker reaches the source through its own counting proxy (`bench.counted`).
    counted: dict[str, CountedSource] = field(default_factory=dict)

    def deliveries(self, made: Made, since: datetime) -> dict[str, Delivery]:
        rows = collect(self.target, since)
        out: dict[str, Delivery] = {
            mode: match_synced(made.events, rows, sync=f"tests/{self.names[mode]}")
            for mode in ("push", "poll")
            if mode in self.procs
        }
        out["recipe"] = match_recipe(made, rows, tag=self.tag)
        return out

    def replayed(self) -> dict[str, float]:
        return {m: p.metric(REPLAYED) for m, p in self.procs.items()}

    def wait_replayed(self, counts: dict[str, float], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.procs[m].metric(REPLAYED) >= c for m, c in counts.items()):
                return True
            time.sleep(0.5)
        return False


def match_recipe(made: Made, rows: list[dict[str, Any]], *, tag: str) -> Delivery:
    """The recipe's copies (extra `recipe == tag`), matched by the source event's nonce."""
    first: dict[int, datetime] = {}
    duplicates = 0
    for row in rows:
        extra = row.get("extra") or {}
        event = made.nonces.get(str(extra.get("nonce"))) if extra.get("recipe") == tag else None
        if event is None:
            continue
        ts = parse_ts(row["timestamp"])
        if event.id in first:
            duplicates += 1
            first[event.id] = min(first[event.id], ts)
        else:
            first[event.id] = ts
    latencies, timeline = [], []
    for event in made.events:
        if event.id in first:
            lat = (first[event.id] - event.timestamp).total_seconds()
            latencies.append(lat)
            timeline.append((event.timestamp.timestamp(), lat))
    missing = sorted({e.id for e in made.events} - set(first))
    return Delivery(latencies=latencies, missing=missing, duplicates=duplicates, timeline=timeline)


def _await(probe: Callable[[], bool], timeout_s: float, interval_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval_s)
    return False


def _figures(deliveries: dict[str, Delivery]) -> dict[str, Any]:
    return {
        mode: {
            "latency_s": summary(d.latencies),
            "latencies": [round(x, 3) for x in d.latencies],
            "missing": len(d.missing),
            "duplicates": d.duplicates,
        }
        for mode, d in deliveries.items()
    }


def _q(figures: dict[str, Any], mode: str, q: str) -> float:
    value: float = figures[mode]["latency_s"].get(q, float("nan"))
    return value


# -- phases ------------------------------------------------------------------------------------


def _settle(pair: Pair, made: Made, since: datetime, timeout_s: float) -> dict[str, Delivery]:
    """Wait until every worker (and the recipe, within reason) has copied `made`."""

    def done() -> bool:
        d = pair.deliveries(made, since)
        return all(not d[m].missing for m in ("push", "poll") if m in d)

    _await(done, timeout_s)
    # The recipe's copies are sent from threads at once; what is missing now is lost.
    return pair.deliveries(made, since)


def phase_sparse(
    pair: Pair, results: Results, *, events: int, gap_s: tuple[float, float], rng: random.Random
) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(seconds=1)
    push = pair.procs["push"]
    before = {m: pair.counted[m].requests() for m in pair.procs}
    seconds = push.metric(SOURCE_SECONDS, role="source")
    reads_before = push.metric(SOURCE_REQUESTS, role="source")
    t0 = time.monotonic()
    made = Made()
    log(f"push {pair.label}: {events} sparse events, {gap_s[0]:g}-{gap_s[1]:g} s apart")
    for i in range(events):
        time.sleep(rng.uniform(*gap_s))
        made.post(pair.writer, pair.uris[i % len(pair.uris)], "sparse", i)
    deliveries = _settle(pair, made, since, 60)
    wall_s = time.monotonic() - t0
    figures = _figures(deliveries)
    figures["events"] = len(made.events)
    for mode, proc in pair.procs.items():
        # Counted at the proxy: logins and retries included, as the source receives them.
        requests = pair.counted[mode].requests() - before[mode]
        figures[mode]["source_requests_per_s"] = round(requests / wall_s, 2)
        # Both write the same SQLite-backed target at nearly the same moment: a write that
        # collides is retried after a back-off (seen: one 5.7 s event).
        figures[mode]["worker_errors"] = worker_errors(proc)
    reads = push.metric(SOURCE_REQUESTS, role="source") - reads_before  # the client's own
    figures["push"]["source_read_mean_s"] = round(
        (push.metric(SOURCE_SECONDS, role="source") - seconds) / max(reads, 1), 4
    )
    figures["push"]["pokes_accepted"] = push.metric("aas_pokes_total", result="accepted")
    figures["push"]["poke_polls"] = push.metric("aas_poke_polls_total")
    _latency_checks(results, pair.label, "sparse", figures)
    results.check(
        "push",
        f"{pair.label}: source requests/s with pokes, without",
        figures["push"]["source_requests_per_s"],
        unit="req/s",
        target="",
        passed=None,
        note=f"without: {figures['poll']['source_requests_per_s']} req/s over the same run "
        f"({figures['push']['pokes_accepted']:.0f} pokes accepted, "
        f"{figures['push']['poke_polls']:.0f} polls woken)",
    )
    return figures


def phase_bursts(pair: Pair, results: Results, *, burst: int, bursts: int) -> dict[str, Any]:
    """`bursts` times `burst` events at once (4 in flight), each after a quiet spell.

    Beside the percentiles over every event: the first event of each burst (what a poke
    speeds up; the rest queue behind it) and the target's write time as the pushing worker
    measured it (its replayer writes one event at a time, so the n-th event of a burst
    waits for n - 1 writes: the target's write time, not polling, sets a burst's p50).

    The recipe is paused meanwhile: its 20 POSTs at once (a thread each) put the rig's
    SQLite target into lock waits, and the workers' writes behind them timed out (15 s) and
    were retried, so every figure measured SQLite. It is compared in the other phases."""
    pause = Path(pair.source.extra_env["AAS_RECIPE_PAUSE_FILE"])
    pause.touch()
    try:
        return _bursts(pair, results, burst=burst, bursts=bursts)
    finally:
        pause.unlink()


def _bursts(pair: Pair, results: Results, *, burst: int, bursts: int) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(seconds=1)
    push = pair.procs["push"]
    writes = push.metric(SOURCE_REQUESTS, role="target:t")
    write_s = push.metric(SOURCE_SECONDS, role="target:t")
    each: list[Made] = []
    log(f"push {pair.label}: {bursts} bursts of {burst} events, 4 in flight")
    for b in range(bursts):
        time.sleep(ACTIVE_HOLD_S + 2)  # each burst comes after a quiet spell
        made = Made()
        each.append(made)
        writers = [EventWriter(pair.source) for _ in range(4)]
        try:
            for w in writers:  # logins and asset ids before the burst
                for uri in pair.uris:
                    w.body(uri, {})
            threads = [
                threading.Thread(
                    target=_send_part,
                    args=(pair, made, w, range(n, burst, len(writers)), b * burst),
                )
                for n, w in enumerate(writers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for w in writers:
                w.close()
    every = Made()
    for made in each:
        every.add(made)
    for error in every.errors:
        results.problem(f"push {pair.key} bursts: {error}")
    deliveries = _settle(pair, every, since, 180)
    deliveries.pop("recipe")  # paused
    figures = _figures(deliveries)
    figures["events"] = len(every.events)
    figures["source_posts_retried"] = every.retried
    writes = push.metric(SOURCE_REQUESTS, role="target:t") - writes
    figures["push"]["target_write_mean_s"] = round(
        (push.metric(SOURCE_SECONDS, role="target:t") - write_s) / max(writes, 1), 4
    )
    for mode, delivery in deliveries.items():
        got = dict(
            zip(
                (e.id for e in every.events if e.id not in delivery.missing),
                delivery.latencies,
                strict=True,
            )
        )
        firsts = [
            got.get(min(made.events, key=lambda e: e.timestamp).id, float("nan"))
            for made in each
            if made.events
        ]
        figures[mode]["first_of_burst_s"] = [round(x, 3) for x in firsts]
    _latency_checks(results, pair.label, f"bursts of {burst}", figures)
    return figures


def _send_part(pair: Pair, made: Made, writer: EventWriter, part: range, base: int) -> None:
    for i in part:
        try:
            made.post(writer, pair.uris[i % len(pair.uris)], "burst", base + i)
        except Exception as exc:  # reported by the phase; the other writers go on
            with made.lock:
                made.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def _latency_checks(results: Results, label: str, kind: str, figures: dict[str, Any]) -> None:
    complete = not (figures["push"]["missing"] or figures["poll"]["missing"])
    read_mean = figures["push"].get("source_read_mean_s")
    for q, limit in (("p50", 0.15), ("p99", 0.4)):
        value = _q(figures, "push", q)
        recipe = (
            f"recipe {_q(figures, 'recipe', q):.3f} s" if "recipe" in figures else "recipe paused"
        )
        note = (
            f"same events: without pokes {_q(figures, 'poll', q):.3f} s, {recipe}; "
            f"{figures['events']} events, {figures['push']['missing']} missing"
        )
        if read_mean is not None:
            note += f"; the worker's source reads took {read_mean:.3f} s each (mean)"
        if "first_of_burst_s" in figures["push"]:
            note += (
                f"; first event of each burst: with pokes {figures['push']['first_of_burst_s']},"
                f" without {figures['poll']['first_of_burst_s']} s; the target took "
                f"{figures['push']['target_write_mean_s']:.3f} s a write (the worker's mean), "
                f"{figures['source_posts_retried']} source POSTs retried after a 5xx"
            )
        results.check(
            "push",
            f"{label}, {kind}, with pokes: {q}",
            round(value, 3),
            unit="s",
            target=f"<= {limit} s",
            passed=value <= limit and complete,
            note=note,
        )
        ratio = value / max(_q(figures, "poll", q), 1e-9)
        results.check(
            "push",
            f"{label}, {kind}: {q} with pokes / without",
            round(ratio, 2),
            unit="x",
            target="",
            passed=None,
            note="the same events read by both workers",
        )
        if "recipe" not in figures:
            continue
        results.check(
            "push",
            f"{label}, {kind}: {q} of the listener -> REST recipe",
            round(_q(figures, "recipe", q), 3),
            unit="s",
            target="",
            passed=None,
            note=f"baseline, same events; {figures['recipe']['missing']} missing",
        )


def phase_outage(pair: Pair, results: Results, *, outage_s: float) -> dict[str, Any]:
    """Events before, during and after the target's API server is stopped for `outage_s`."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    made = {"before": Made(), "down": Made(), "after": Made()}
    seq = 0

    def one(part: str) -> None:
        nonlocal seq
        made[part].post(pair.writer, pair.uris[seq % len(pair.uris)], f"outage-{part}", seq)
        seq += 1

    log(f"push {pair.label}: target down {outage_s:.0f} s mid-stream")
    for _ in range(3):
        one("before")
        time.sleep(OUTAGE_GAP_S)
    pair.target.stop_api()
    down_at = time.monotonic()
    try:
        while time.monotonic() - down_at < outage_s:
            one("down")
            time.sleep(OUTAGE_GAP_S)
    finally:
        down_s = time.monotonic() - down_at
        pair.target.start_api()
        restart_s = time.monotonic() - down_at - down_s
    for _ in range(3):
        one("after")
        time.sleep(OUTAGE_GAP_S)
    every = Made()
    for chunk in made.values():
        every.add(chunk)
    _settle(pair, every, since, 300)
    figures: dict[str, Any] = {
        "down_s": round(down_s, 1),
        "api_restart_s": round(restart_s, 1),
        "events": {name: len(m.events) for name, m in made.items()},
    }
    for part, part_made in made.items():
        for mode, d in pair.deliveries(part_made, since).items():
            figures.setdefault(mode, {})[part] = {
                "made": len(part_made.events),
                "arrived": len(part_made.events) - len(d.missing),
                "duplicates": d.duplicates,
            }
    down = len(made["down"].events)
    label = f"{pair.label}, target down {down_s:.0f} s"
    for mode in ("push", "poll"):
        lost = sum(p["made"] - p["arrived"] for p in figures[mode].values())
        dupes = sum(p["duplicates"] for p in figures[mode].values())
        results.check(
            "push",
            f"{label}: events the sync lost ({'with' if mode == 'push' else 'without'} pokes)",
            lost,
            unit="events",
            target="0, no duplicates",
            passed=lost == 0 and dupes == 0,
            note=f"of {len(every.events)} made ({down} while down); {dupes} duplicates",
        )
    recipe = figures["recipe"]
    results.check(
        "push",
        f"{label}: events the listener -> REST recipe lost",
        sum(p["made"] - p["arrived"] for p in recipe.values()),
        unit="events",
        target="",
        passed=None,
        note=f"made while down: {down}, of which arrived {recipe['down']['arrived']}; "
        f"before: {recipe['before']['arrived']}/{recipe['before']['made']}, "
        f"after: {recipe['after']['arrived']}/{recipe['after']['made']} arrived "
        f"(the API server took {restart_s:.0f} s to be healthy again)",
    )
    return figures


def phase_idle(pair: Pair, results: Results, *, idle_s: float) -> dict[str, Any]:
    """The pushing worker alone on an idle source: requests counted at the server."""
    pair.procs.pop("poll").stop()
    push = pair.procs["push"]
    time.sleep(ACTIVE_HOLD_S + 2)  # past the active hold of the last event
    start = float(int(time.time()) + 1)  # whole seconds: 2.11's log has no finer stamps
    time.sleep(start - time.time())
    worker_before = push.metric(SOURCE_REQUESTS, role="source")
    pokes_before = push.metric("aas_pokes_total")
    end = start + round(idle_s)
    time.sleep(end - time.time())
    worker = push.metric(SOURCE_REQUESTS, role="source") - worker_before
    pokes = push.metric("aas_pokes_total") - pokes_before
    time.sleep(2)  # let the server's log lines of the window's last second out
    at_server = requests_between(access_log_times(pair.source), start, end)
    rate = at_server / (end - start)
    figures = {
        "window_s": end - start,
        "server_requests": at_server,
        "server_requests_per_s": round(rate, 3),
        "worker_requests": worker,
        "pokes": pokes,
    }
    results.check(
        "push",
        f"{pair.label}: idle source requests/s with pokes enabled",
        round(rate, 3),
        unit="req/s",
        target="<= 1/s",
        passed=rate <= 1.0,
        note=f"{at_server} requests in the source's access log over {end - start:.0f} s "
        f"(the pushing worker its only client; it counted {worker:.0f}); {pokes:.0f} pokes",
    )
    return figures


def phase_restart(pair: Pair, results: Results) -> dict[str, Any]:
    """SIGKILL the pushing worker, make an event, start a new process on the same state."""
    push = pair.procs["push"]
    name = pair.names["push"]
    killed_at = time.time()
    push.kill()
    made = Made()
    event = made.post(pair.writer, pair.uris[0], "restart", 0)
    push.start()
    ready_s = time.time() - killed_at
    since = datetime.fromtimestamp(killed_at, UTC) - timedelta(seconds=1)

    def arrived() -> bool:
        return not match_synced(
            made.events, collect(pair.target, since), sync=f"tests/{name}"
        ).missing

    ok = _await(arrived, 60, interval_s=0.2)
    delivery = match_synced(made.events, collect(pair.target, since), sync=f"tests/{name}")
    first_s = (
        event.timestamp.timestamp() + delivery.latencies[0] - killed_at if ok else float("nan")
    )
    figures = {
        "kill_to_first_replay_s": round(first_s, 3),
        "event_made_after_kill_s": round(event.timestamp.timestamp() - killed_at, 3),
        "new_process_ready_s": round(ready_s, 3),
        "new_process_replayed": push.metric(REPLAYED),
        "duplicates": delivery.duplicates,
    }
    results.check(
        "push",
        f"{pair.label}: SIGKILL of the worker to the first event replayed by the new process",
        round(first_s, 3),
        unit="s",
        target="<= 3 s",
        passed=first_s <= 3.0 and delivery.duplicates == 0,
        note=f"the event made {figures['event_made_after_kill_s']} s after the kill, the new "
        "process started at once (same state file and group_instance_id) and answered "
        f"/readyz {ready_s:.2f} s after the kill; kill to the target's row",
    )
    return figures


def _trigger_and_time(source: AirflowInstance, dag_id: str) -> dict[str, float]:
    """One run of `dag_id` (its one task has an asset outlet): the task's and the run's
    seconds, as Airflow recorded them."""
    prefix = "/api/v1" if source.major == 2 else "/api/v2"
    body: dict[str, Any] = {} if source.major == 2 else {"logical_date": None}
    with source.client() as client:
        response = client.post(f"{prefix}/dags/{dag_id}/dagRuns", json=body)
        response.raise_for_status()
        run_id = response.json()["dag_run_id"]
        run_path = f"{prefix}/dags/{dag_id}/dagRuns/{run_id}"
        deadline = time.monotonic() + 180
        while True:
            run = AirflowInstance._get(client, run_path).json()
            if run["state"] in ("success", "failed"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after 180 s")
            time.sleep(0.5)
        if run["state"] != "success":
            raise RuntimeError(f"{dag_id} run {run_id} {run['state']}")
        (ti,) = AirflowInstance._get(client, f"{run_path}/taskInstances").json()["task_instances"]
    return {
        "task_s": (parse_ts(ti["end_date"]) - parse_ts(ti["start_date"])).total_seconds(),
        "run_s": (parse_ts(run["end_date"]) - parse_ts(run["start_date"])).total_seconds(),
    }


def phase_task(pair: Pair, results: Results, *, runs: int, poke_port: int) -> dict[str, Any]:
    """A task that makes an asset event: the plugin installed and its poke URL a socket that
    accepts and never answers, vs no plugin at all; the same source, restarted between.

    Runs last: it stops the workers and restarts the source's servers twice (the recipe
    plugin leaves its folder for both, so that only the listener plugin differs)."""
    for proc in pair.procs.values():
        proc.stop()
    source = pair.source
    plugin = dict(source.extra_env)
    (source.home / "plugins" / "aas_bench_recipe.py").unlink()
    uri = f"s3://aas-bench/push-task/{pair.key}"
    source.add_assets([uri])
    dag_id = next(p.stem for p in (source.home / "dags").glob("aas_late_*.py"))
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", poke_port))
    hole.listen(128)
    hole.settimeout(10)
    timings: dict[str, list[dict[str, float]]] = {}
    try:
        for variant, env in (
            ("silent_poke", plugin),
            ("no_plugin", {k: v for k, v in plugin.items() if not k.startswith("AIRFLOW_ASSET")}),
        ):
            if variant == "no_plugin":
                env.pop("PYTHONPATH", None)
            log(f"push {pair.label}: {runs} task runs, {variant}")
            source.restart(env)
            _trigger_and_time(source, dag_id)  # warm-up: the first run parses, forks, logs in
            timings[variant] = [_trigger_and_time(source, dag_id) for _ in range(runs)]
            if variant == "silent_poke":
                conn, _ = hole.accept()  # the pokes did try (queued in the backlog)
                conn.close()
    finally:
        hole.close()
    figures: dict[str, Any] = {
        v: {
            "task_s": summary([t["task_s"] for t in ts]),
            "run_s": summary([t["run_s"] for t in ts]),
        }
        for v, ts in timings.items()
    }
    silent, none = figures["silent_poke"], figures["no_plugin"]
    for what in ("task_s", "run_s"):
        delta = silent[what]["p50"] - none[what]["p50"]
        results.check(
            "push",
            f"{pair.label}: {'task' if what == 'task_s' else 'DAG run'} seconds, "
            "plugin with a poke URL that never answers minus no plugin (p50)",
            round(delta, 3),
            unit="s",
            target="< 0.3 s (the poke's 1 s timeout must not show)",
            passed=delta < 0.3,
            note=f"{runs} runs each: {silent[what]['p50']:.3f} s vs {none[what]['p50']:.3f} s; "
            f"max {silent[what]['max']:.3f} s vs {none[what]['max']:.3f} s",
        )
    return figures


# -- the section -------------------------------------------------------------------------------


def run_push(stack: Stack, results: Results, profile: Profile, *, seed: int = 13) -> None:
    target = stack.airflow("a3t")
    rng = random.Random(seed)
    for key, version, label in (
        ("2to3", AIRFLOW2, "2.11 -> 3.3"),
        ("3to3", AIRFLOW3, "3.3 -> 3.3"),
    ):
        token = secrets.token_hex(16)
        port = free_port()
        workdir = stack.workdir / f"push-{key}"
        tag = f"recipe-{key}-{secrets.token_hex(3)}"
        source = _pushing_source(version, workdir, port, token, target, tag)
        procs: dict[str, SyncProcess] = {}
        counted: dict[str, CountedSource] = {}
        writer: EventWriter | None = None
        try:
            uris = pool(f"push-{key}")
            names = {"push": f"push-{key}", "poll": f"poll-{key}"}
            for mode, name in names.items():
                counted[mode] = CountedSource(source).start()
                docs = counted[mode].route(
                    stack.manifests(name, source, [("t", target)], include=uris)
                )
                if mode == "push":
                    with_push(docs, name=name, token=token)
                proc = SyncProcess(
                    workdir / name, docs, metrics_port=port if mode == "push" else None
                )
                procs[mode] = proc
                proc.start()
            writer = EventWriter(source)
            pair = Pair(key, label, source, target, uris, names, procs, tag, writer, counted)
            # Warm-up: logins, asset ids, consumer groups, the recipe's token; then the clock.
            for uri in uris:
                writer.post(uri, {"bench": "warm-up"})
            if not pair.wait_replayed(dict.fromkeys(procs, len(uris)), 180):
                results.problem(f"push {key}: warm-up events not replayed within 180 s")
                continue
            _run_phases(pair, results, profile, rng)
        finally:
            if writer is not None:
                writer.close()
            for proc in procs.values():
                proc.stop()
            for proxy in counted.values():
                proxy.stop()
            source.stop()


def _run_phases(pair: Pair, results: Results, profile: Profile, rng: random.Random) -> None:
    figures: dict[str, Any] = {"label": pair.label}
    results.record("push", **{pair.key: figures})  # filled in phase by phase
    phases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (
            "sparse",
            lambda: phase_sparse(
                pair, results, events=profile.push_events, gap_s=profile.push_gap_s, rng=rng
            ),
        ),
        (
            "bursts",
            lambda: phase_bursts(
                pair, results, burst=profile.push_burst, bursts=profile.push_bursts
            ),
        ),
    ]
    if pair.key == "3to3" and profile.push_outage_s:
        phases.append(
            ("outage", lambda: phase_outage(pair, results, outage_s=profile.push_outage_s))
        )
    phases += [
        ("idle", lambda: phase_idle(pair, results, idle_s=profile.push_idle_s)),
        ("restart", lambda: phase_restart(pair, results)),
        (
            "task",
            lambda: phase_task(
                pair,
                results,
                runs=profile.push_task_runs,
                poke_port=pair.procs["push"].metrics_port,
            ),
        ),
    ]
    for phase, run in phases:
        try:
            figures[phase] = run()
        except Exception as exc:  # a failed phase is reported; the others still run
            results.problem(f"push {pair.key} {phase}: {type(exc).__name__}: {exc}")
