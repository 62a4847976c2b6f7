"""Soak: steady events for N minutes on the cluster path, with every fault of the reliability
suite interleaved, and what it cost.

    PYTHONPATH=operator:tools:tests python -m bench.soak --minutes 30

The whole product path runs on real parts, as in `tests/reliability`: an AirflowAssetSync on
the rig's kube-apiserver, the operator (a real process, exactly `rbac.operator_rules()`), the
worker as its Deployment's pod (a local process with the Deployment's env, as its
ServiceAccount, offsets in the CR's status; this script is its kubelet and restarts it when
it exits), Kafka between poller and replayer, an Airflow 3.3 source reached through
`rig.faultproxy.FaultProxy`, and a second Airflow 3.3 as the target.

While events flow at a steady rate, the faults come round in turn, with quiet gaps:

1. the worker SIGKILLed at random points (a few times in a row);
2. the Kafka broker killed and started again after 60 s;
3. the target's API server stopped for 2 minutes;
4. the source failing 20% of requests (5xx, hangs, resets) for 2 minutes;
5. the kube-apiserver restarted while the worker patches status;
6. the operator SIGKILLed during a reconcile (a spec change that rolls the worker).

Outages are scaled by ``min(1, minutes / 30)`` (or ``--outage-scale``), so a short run shows
the machinery in minutes. After each fault the script waits for recovery: every event created
before the fault ended is in the target. One that does not recover within
``--recovery-timeout`` is an *unrecovered error*, reported with the worker's last errors.

Writes ``results/soak-<UTC timestamp>/report.md`` and ``report.json``: events lost and
duplicated (by marker, from the target's own API), each fault with its recovery time, RSS of
the worker and the operator over time, worker exits nobody asked for, the error and warning
lines of both logs grouped by message, and the status the worker left in the CR.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rig.airflow import AIRFLOW3, POOL, AirflowInstance
from rig.cache import ROOT
from rig.faultproxy import FaultProxy
from rig.kafka import KafkaBroker
from rig.kube import KubeRig
from rig.procs import REGISTRY
from rig.sync import MARKER, sync_manifests
from support import live
from support.stream import EventStream, Verdict, delivery, recent, source_ids
from support.sync_cluster import SyncCluster

#: The issue's outage lengths at full scale (a 30-minute soak).
BROKER_DOWN_S = 60.0
TARGET_DOWN_S = 120.0
FLAKY_S = 120.0
FAULT_KINDS = (
    "worker-kill",
    "broker-down",
    "target-down",
    "flaky-source",
    "apiserver-restart",
    "operator-kill",
)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Fault:
    kind: str
    started_s: float
    detail: dict[str, Any] = field(default_factory=dict)
    ended_s: float = 0.0
    recovered: bool = False
    recovery_s: float | None = None
    missing_at_deadline: int = 0


@dataclass
class Sample:
    t_s: float
    worker_rss_mib: float
    operator_rss_mib: float
    worker_start: int


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.scale = args.outage_scale if args.outage_scale else min(1.0, args.minutes / 30)
        self.t0 = time.monotonic()
        self.faults: list[Fault] = []
        self.crashes: list[dict[str, Any]] = []
        self.samples: list[Sample] = []
        self.unrecovered: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._stop_sampling = threading.Event()
        self.uris = POOL[:4]
        self.kube = KubeRig(workdir=workdir / "kube")
        self.kafka = KafkaBroker(workdir / "kafka")
        self.source = AirflowInstance(version=AIRFLOW3, home=workdir / "source")
        self.target = AirflowInstance(version=AIRFLOW3, home=workdir / "target")
        self.proxy: FaultProxy | None = None
        self.cluster: SyncCluster | None = None
        self.stream: EventStream | None = None
        self._expected_exit = False

    def now_s(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    # -- set-up --------------------------------------------------------------------------

    def start(self) -> None:
        log(f"starting the rig in {self.workdir}")
        errors: list[BaseException] = []

        def start(instance: AirflowInstance) -> None:
            try:
                instance.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(a,)) for a in (self.source, self.target)]
        for thread in threads:
            thread.start()
        self.kube.start()
        self.kafka.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        port = int(self.source.url.rsplit(":", 1)[1])
        self.proxy = FaultProxy(port, fault_rate=0.0, seed=self.args.seed).start()
        self.kube.kubectl("apply", "--server-side", "-f", str(live.SYNC_CRD))
        live.wait_established(self.kube, "airflowassetsyncs.airflow-asset-sync.github.io")
        live.install_operator_rbac(self.kube)
        docs = sync_manifests(
            "soak",
            self.source,
            [("t", self.target)],
            include=self.uris,
            kafka=self.kafka.bootstrap,
            topic="soak-events",
        )
        spec = docs[-1]["spec"]
        spec["source"]["url"] = self.proxy.url
        spec["source"]["instanceId"] = self.source.url
        self.cluster = SyncCluster(
            self.kube, namespace="soak", manifests=docs, workdir=self.workdir / "sync"
        )
        self.cluster.start()
        threading.Thread(target=self._sample, name="rss", daemon=True).start()

    def _sample(self) -> None:
        while not self._stop_sampling.wait(5.0):
            cluster = self.cluster
            if cluster is None:
                continue
            pod = cluster.pod.server
            operator = cluster.operator.server
            self.samples.append(
                Sample(
                    t_s=self.now_s(),
                    worker_rss_mib=round(
                        _rss_mib(pod.proc.pid if pod and pod.running and pod.proc else None), 1
                    ),
                    operator_rss_mib=round(
                        _rss_mib(operator.proc.pid if operator.running and operator.proc else None),
                        1,
                    ),
                    worker_start=cluster.pod.starts,
                )
            )

    # -- the kubelet ----------------------------------------------------------------------

    def supervise(self) -> None:
        """Restart the worker pod if it exited without being asked (and note why)."""
        assert self.cluster is not None
        pod = self.cluster.pod
        if pod.running or self._expected_exit:
            return
        code = pod.server.proc.returncode if pod.server and pod.server.proc else None
        text = pod.server.log_tail(60) if pod.server is not None else ""
        tail = [ln for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
        self.crashes.append({"t_s": self.now_s(), "exit_code": code, "errors": tail[-5:]})
        log(f"worker exited on its own ({code}); restarting it as a kubelet would")
        pod.start(wait_ready=False)

    def idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.supervise()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    # -- faults --------------------------------------------------------------------------

    def worker_kill(self, fault: Fault) -> None:
        assert self.cluster is not None
        kills = self.rng.randint(3, 5)
        for _ in range(kills):
            self.idle(self.rng.uniform(1.0, 8.0))  # a random point
            self._expected_exit = True
            self.cluster.pod.kill()
            self.cluster.pod.start(wait_ready=False)
            self._expected_exit = False
        fault.detail["kills"] = kills

    def broker_down(self, fault: Fault) -> None:
        down = round(BROKER_DOWN_S * self.scale, 1)
        self.kafka.stop(hard=True)
        try:
            self.idle(down)
        finally:
            self.kafka.start()
        fault.detail["down_s"] = down

    def target_down(self, fault: Fault) -> None:
        down = round(TARGET_DOWN_S * self.scale, 1)
        self.target.stop_api()
        try:
            self.idle(down)
        finally:
            self.target.start_api()
        fault.detail["down_s"] = down

    def flaky_source(self, fault: Fault) -> None:
        assert self.proxy is not None
        seconds = round(FLAKY_S * self.scale, 1)
        before = self.proxy.stats()
        self.proxy.fault_rate = 0.2
        try:
            self.idle(seconds)
        finally:
            self.proxy.fault_rate = 0.0
        during = self.proxy.stats() - before
        fault.detail.update(
            seconds=seconds,
            requests=during["requests"],
            faults=during["requests"] - during["ok"],
        )

    def apiserver_restart(self, fault: Fault) -> None:
        down = round(self.rng.uniform(2.0, 8.0), 1)
        self.kube.restart_apiserver(down_s=down)
        fault.detail["down_s"] = down

    def operator_kill(self, fault: Fault) -> None:
        assert self.cluster is not None
        interval = self.rng.choice(["250ms", "300ms", "400ms"])
        self.cluster.patch_spec({"pollInterval": interval})
        time.sleep(self.rng.uniform(0.0, 0.6))  # a random point in the reconcile
        self.cluster.operator.kill()
        self.cluster.operator.start()
        self._expected_exit = True  # the rollout stops the old pod
        try:
            self.cluster.wait_converged(timeout_s=180)
        finally:
            self._expected_exit = False
        fault.detail["pollInterval"] = interval

    def run_fault(self, kind: str) -> None:
        fault = Fault(kind=kind, started_s=self.now_s())
        self.faults.append(fault)
        started_at = datetime.now(UTC)
        log(f"fault: {kind}")
        try:
            getattr(self, kind.replace("-", "_"))(fault)
        except Exception as exc:
            self.problems.append(f"{kind} at {fault.started_s}s: {exc!r}")
            log(f"fault {kind} could not be carried out: {exc!r}")
            traceback.print_exc()
        fault.ended_s = self.now_s()
        self.await_recovery(fault, started_at - timedelta(seconds=10), datetime.now(UTC))

    def await_recovery(self, fault: Fault, since: datetime, until: datetime) -> None:
        """Until every source event stamped before the fault ended is in the target."""
        deadline = time.monotonic() + self.args.recovery_timeout
        missing: set[int] = set()
        while time.monotonic() < deadline:
            self.supervise()
            try:
                owed = {
                    i
                    for i, ts, extra in recent(self.source, self.uris, since)
                    if ts <= until and MARKER not in extra
                }
                landed = {
                    int(extra[MARKER]["event_id"])
                    for _, _, extra in recent(self.target, self.uris, since)
                    if isinstance(extra.get(MARKER), dict)
                }
            except Exception as exc:  # the target may still be starting
                log(f"recovery check: {exc!r}")
                time.sleep(2.0)
                continue
            missing = owed - landed
            if not missing:
                fault.recovered = True
                fault.recovery_s = round(self.now_s() - fault.ended_s, 1)
                log(f"{fault.kind}: recovered {fault.recovery_s}s after it ended")
                return
            time.sleep(2.0)
        fault.missing_at_deadline = len(missing)
        assert self.cluster is not None
        status = self.cluster.status()
        self.unrecovered.append(
            {
                "fault": fault.kind,
                "started_s": fault.started_s,
                "missing": len(missing),
                "status_errors": _status_errors(status),
                "worker_errors": _error_lines(self.cluster.pod.log())[-10:],
            }
        )
        log(
            f"{fault.kind}: NOT recovered within {self.args.recovery_timeout:.0f}s "
            f"({len(missing)} events missing)"
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> None:
        total = int(self.args.rate * self.args.minutes * 60)
        self.stream = EventStream(
            self.source, self.uris, total=total, rate=self.args.rate, label="soak"
        ).start()
        kinds = list(FAULT_KINDS)
        turn = 0
        self.idle(self.args.quiet_s)
        # Faults come round while events flow; a short run also gets each kind once, the
        # last ones on the backlog the earlier faults left.
        while not self.stream.done.is_set() or turn < len(kinds):
            self.run_fault(kinds[turn % len(kinds)])
            turn += 1
            self.idle(self.args.quiet_s)
        self.stream.join()

    def finish(self) -> dict[str, Any]:
        assert self.cluster is not None and self.stream is not None
        log("stream done; waiting for the last events, then a graceful stop")
        ids = source_ids(self.source, self.uris)
        deadline = time.monotonic() + self.args.recovery_timeout
        while True:
            self.supervise()
            verdict = Verdict.of(ids, delivery(self.target, self.uris, self.source.url))
            if not verdict.lost or time.monotonic() > deadline:
                break
            time.sleep(3.0)
        exit_code = self.cluster.pod.stop()
        verdict = Verdict.of(ids, delivery(self.target, self.uris, self.source.url))
        status = self.cluster.status()
        self._stop_sampling.set()
        worker_log = self.cluster.pod.log()
        operator_log = self.cluster.operator.log_path.read_text(errors="replace")
        return {
            "config": {**vars(self.args), "outage_scale_used": self.scale},
            "duration_s": self.now_s(),
            "events": {
                "created": self.stream.created,
                "in_source": verdict.expected,
                "delivered": verdict.delivered,
                "lost": len(verdict.lost),
                "duplicated": len(verdict.duplicated),
                "lost_ids": verdict.lost[:50],
                "duplicated_ids": dict(list(verdict.duplicated.items())[:50]),
                "stream_s": round(self.stream.duration_s, 1),
                "producer_errors": dict(self.stream.errors),
            },
            "faults": [asdict(f) for f in self.faults],
            "unrecovered_errors": self.unrecovered,
            "worker_crashes": self.crashes,
            "worker_final_exit_code": exit_code,
            "worker_starts": self.cluster.pod.starts,
            "rss": _rss_summary(self.samples),
            "rss_samples": [asdict(s) for s in self.samples],
            "status": {
                "errors_at_end": _status_errors(status),
                "source": status.get("source"),
                "targets": status.get("targets"),
            },
            "log_errors": {
                "worker": _grouped(_error_lines(worker_log)),
                "operator": _grouped(_error_lines(operator_log)),
            },
            "proxy": dict(self.proxy.stats()) if self.proxy else {},
            "problems": self.problems,
        }

    def stop(self) -> None:
        self._stop_sampling.set()
        if self.cluster is not None:
            try:
                self.cluster.stop()
            except Exception as exc:
                log(f"stopping the sync: {exc!r}")
        if self.proxy is not None:
            self.proxy.stop()
        REGISTRY.stop_all()


# -- report ---------------------------------------------------------------------------------

_LEVEL = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b")
_NOISE = re.compile(r"\d+(\.\d+)?|0x[0-9a-f]+|'[^']*'|\"[^\"]*\"")


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if _LEVEL.search(ln)]


def _grouped(lines: list[str]) -> list[dict[str, Any]]:
    """Error/warning lines by message with numbers and quoted values blanked, most frequent
    first, each with one verbatim example."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    for line in lines:
        match = _LEVEL.search(line)
        assert match is not None
        message = line[match.start() :]
        key = _NOISE.sub("#", message)[:160]
        counts[key] += 1
        example.setdefault(key, line[:300])
    return [{"count": n, "message": k, "example": example[k]} for k, n in counts.most_common(25)]


def _status_errors(status: dict[str, Any]) -> dict[str, str]:
    errors = {}
    if (status.get("source") or {}).get("lastError"):
        errors["source"] = status["source"]["lastError"]
    for target in status.get("targets") or []:
        if target.get("lastError"):
            errors[f"target {target['name']}"] = target["lastError"]
    return errors


def _rss_summary(samples: list[Sample]) -> dict[str, Any]:
    worker = [s for s in samples if s.worker_rss_mib > 0]
    operator = [s for s in samples if s.operator_rss_mib > 0]
    out: dict[str, Any] = {"samples": len(samples), "interval_s": 5}
    if worker:
        out["worker_mib"] = {
            "first": worker[0].worker_rss_mib,
            "max": max(s.worker_rss_mib for s in worker),
            "last": worker[-1].worker_rss_mib,
        }
        # Growth within the longest-lived worker process (restarts reset RSS), after its
        # first minute (imports, caches and connection pools filling are not a leak).
        by_start: dict[int, list[Sample]] = {}
        for s in worker:
            by_start.setdefault(s.worker_start, []).append(s)
        longest = max(by_start.values(), key=len)
        settled = [s for s in longest if s.t_s - longest[0].t_s >= 60]
        span_min = (settled[-1].t_s - settled[0].t_s) / 60 if settled else 0.0
        out["worker_longest_life"] = {
            "samples": len(longest),
            "minutes": round((longest[-1].t_s - longest[0].t_s) / 60, 1),
            # Below 5 settled minutes a slope says nothing about a leak.
            "slope_mib_per_hour": (
                _slope([(s.t_s, s.worker_rss_mib) for s in settled]) if span_min >= 5 else None
            ),
        }
    if operator:
        out["operator_mib"] = {
            "first": operator[0].operator_rss_mib,
            "max": max(s.operator_rss_mib for s in operator),
            "last": operator[-1].operator_rss_mib,
        }
    return out


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope in MiB per hour (None below 6 points: too few to say)."""
    if len(points) < 6:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return round(cov / var * 3600, 1)


def markdown(report: dict[str, Any]) -> str:
    ev = report["events"]
    faults = report["faults"]
    lines = [
        f"# Soak: {report['config']['minutes']} minutes, faults interleaved",
        "",
        f"Run {report['started']} on {report['host']}; wall time {report['duration_s']:.0f} s; "
        f"{report['config']['rate']} events/s; "
        f"outage scale {report['config']['outage_scale_used']}.",
        "",
        "## Verdict",
        "",
        "| events in source | delivered | lost | duplicated | faults | unrecovered | worker "
        "crashes |",
        "|---|---|---|---|---|---|---|",
        f"| {ev['in_source']} | {ev['delivered']} | **{ev['lost']}** | **{ev['duplicated']}** "
        f"| {len(faults)} | **{len(report['unrecovered_errors'])}** "
        f"| {len(report['worker_crashes'])} |",
        "",
        "## Faults",
        "",
        "| # | fault | at (s) | lasted (s) | recovered after (s) | detail |",
        "|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(faults, 1):
        recovered = (
            f["recovery_s"] if f["recovered"] else f"NO ({f['missing_at_deadline']} missing)"
        )
        lasted = round(f["ended_s"] - f["started_s"], 1)
        lines.append(
            f"| {i} | {f['kind']} | {f['started_s']} | {lasted} | {recovered} "
            f"| {json.dumps(f['detail'])} |"
        )
    rss = report["rss"]
    lines += ["", "## Memory (RSS, MiB)", ""]
    if "worker_mib" in rss:
        w, life = rss["worker_mib"], rss["worker_longest_life"]
        slope = life["slope_mib_per_hour"]
        growth = f"{slope} MiB/h" if slope is not None else "n/a (under 5 settled minutes)"
        lines.append(
            f"- worker: first {w['first']}, max {w['max']}, last {w['last']}; longest-lived "
            f"process {life['minutes']} min, growth after its first minute {growth}"
        )
    if "operator_mib" in rss:
        o = rss["operator_mib"]
        lines.append(f"- operator: first {o['first']}, max {o['max']}, last {o['last']}")
    lines += ["", "| t (s) | worker | operator | worker start # |", "|---|---|---|---|"]
    samples = report["rss_samples"]
    step = max(1, len(samples) // 30)
    for s in samples[::step]:
        lines.append(
            f"| {s['t_s']} | {s['worker_rss_mib']} | {s['operator_rss_mib']} "
            f"| {s['worker_start']} |"
        )
    lines += ["", "## Errors that did not recover", ""]
    if not report["unrecovered_errors"]:
        lines.append("None: every fault was followed by full delivery of what it held up.")
    for u in report["unrecovered_errors"]:
        lines.append(
            f"- {u['fault']} at {u['started_s']} s: {u['missing']} events missing; "
            f"status errors {u['status_errors']}"
        )
        lines += [f"  - `{e[:200]}`" for e in u["worker_errors"][-5:]]
    if report["worker_crashes"]:
        lines += ["", "Worker exits nobody asked for:", ""]
        lines += [
            f"- {c['t_s']} s: exit {c['exit_code']}: {c['errors'][-1:]}"
            for c in report["worker_crashes"]
        ]
    lines += [
        "",
        f"Status errors left at the end: {report['status']['errors_at_end'] or 'none'}",
        "",
        "## Error and warning lines, grouped",
        "",
    ]
    for who in ("worker", "operator"):
        lines += [f"### {who}", "", "| count | message |", "|---|---|"]
        for g in report["log_errors"][who][:15]:
            lines.append(f"| {g['count']} | `{g['message'][:140]}` |")
        lines.append("")
    if report["problems"]:
        lines += ["## Problems running the soak itself", ""]
        lines += [f"- {p}" for p in report["problems"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the event stream")
    parser.add_argument("--rate", type=float, default=8.0, help="events per second")
    parser.add_argument("--seed", type=int, default=30)
    parser.add_argument("--quiet-s", type=float, default=20.0, help="gap between faults")
    parser.add_argument(
        "--outage-scale",
        type=float,
        default=None,
        help="multiply the outages by this (default: min(1, minutes/30))",
    )
    parser.add_argument(
        "--recovery-timeout",
        type=float,
        default=420.0,
        help="seconds a fault may take to be fully caught up",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    outdir = args.out or ROOT / "results" / f"soak-{stamp}"
    workdir = Path(f"/tmp/aas-soak-{stamp}")
    outdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report: dict[str, Any] = {}
    try:
        soak.start()
        soak.run()
        report = soak.finish()
    except BaseException as exc:
        soak.problems.append(f"the soak stopped early: {exc!r}")
        log(f"stopped early: {exc!r}")
        traceback.print_exc()
        raise
    finally:
        soak.stop()
        if report:
            report["started"] = stamp
            report["host"] = f"{os.cpu_count()} CPUs"
            (outdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
            (outdir / "report.md").write_text(markdown(report))
            log(f"report: {outdir / 'report.md'}")
    ok = (
        report["events"]["lost"] == 0
        and report["events"]["duplicated"] == 0
        and not report["unrecovered_errors"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
