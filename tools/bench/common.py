"""What every bench phase shares: the run profile, results, statistics, RSS and load readings.

Nothing here starts a process. Figures go into one `Results` object that the report turns
into markdown, JSON and charts; a phase records what it measured (`record`), each figure
against its target (`check`), and what went wrong (`problem`), and never raises past its
own section: a failed section is reported, the others still run.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = (
    "latency",
    "parking",
    "idle",
    "replay",
    "catchup",
    "naive",
    "assetwatcher",
    "operator",
    "operator-cluster",
    "push",
    "delivery",
)


@dataclass(frozen=True)
class Profile:
    """Counts and durations of one run; `FULL` meets the issue's minimums, `QUICK` smokes."""

    name: str
    #: Events per latency run at the default settings (issue: >= 500) and their rate, from a
    #: 3.x source and from a 2.x source (one sync gunicorn worker: ~0.2-0.35 s per POST on a
    #: loaded 2-core machine, so 5/s would saturate it and measure the source, not the sync).
    latency_events: int
    latency_rate: float
    latency_rate_v1: float
    #: Events per variant run (other pollInterval, the adaptive-poll prototype); 0 skips.
    variant_events: int
    #: Seconds of the idle window over which source requests are counted.
    idle_window_s: float
    #: POSTs of the plain httpx loop that measures the target's raw ceiling, and the time
    #: it may take (at 4 in flight the rig's SQLite target does ~1 write/s).
    ceiling_posts: int
    ceiling_deadline_s: float
    #: POSTs of the short raw loops right before and after each replay window.
    bracket_posts: int
    #: Events in the source before the catch-up worker starts (issue: 10,000).
    backlog_events: int
    #: Seconds the replayer is watched draining the backlog after the catch-up ended.
    replay_window_s: float
    #: The naive poller's interval (60 s, like a sensor) and how long it runs.
    naive_interval_s: float
    naive_duration_s: float
    naive_rate: float
    #: The AssetWatcher alternative: messages at a rate it can sustain, then a burst at the
    #: latency runs' rate, and how long each may take to become events.
    watcher_messages: int
    watcher_rate: float
    watcher_burst: int
    watcher_drain_s: float
    #: AirflowAssetSync objects applied at once for the operator figures, one run per size
    #: (issues: 200, then 1,000), and how long the largest then idles (issue: 30 minutes).
    operator_syncs: tuple[int, ...]
    operator_idle_s: float
    #: Sparse events per source for the push figures, and the gap between two (seconds,
    #: uniform; the issue: one every 5-30 s, so each is the first after a quiet spell).
    push_events: int = 20
    push_gap_s: tuple[float, float] = (5.0, 30.0)
    #: On the real cluster: suspended syncs applied at once (no pod each: one node runs at
    #: most 60 pods in the rig), then live syncs with a worker pod each.
    cluster_suspended_syncs: int = 1000
    cluster_live_syncs: int = 40
    #: Events per burst of the delivery-mode figures (one burst per mode).
    delivery_burst: int = 10
    #: Push bursts: events made at once (4 in flight), and how many bursts.
    push_burst: int = 20
    push_bursts: int = 3
    #: Seconds the target's API server is down mid-stream (issue: 2 minutes); 0 skips.
    push_outage_s: float = 120.0
    #: Seconds of the idle window over which the source's access log is counted.
    push_idle_s: float = 60.0
    #: Runs of a task with an asset outlet per variant (plugin with a silent poke URL, none).
    push_task_runs: int = 5


FULL = Profile(
    name="full",
    latency_events=500,
    latency_rate=5.0,
    latency_rate_v1=2.5,
    variant_events=200,
    idle_window_s=60.0,
    ceiling_posts=2000,
    ceiling_deadline_s=45.0,
    bracket_posts=600,
    backlog_events=10_000,
    replay_window_s=45.0,
    naive_interval_s=60.0,
    naive_duration_s=100.0,
    naive_rate=1.0,
    watcher_messages=20,
    watcher_rate=0.4,
    watcher_burst=60,
    watcher_drain_s=60.0,
    operator_syncs=(200, 1000),
    operator_idle_s=1800.0,
)

QUICK = Profile(
    name="quick",
    latency_events=60,
    latency_rate=5.0,
    latency_rate_v1=2.5,
    variant_events=40,
    idle_window_s=15.0,
    ceiling_posts=300,
    ceiling_deadline_s=15.0,
    bracket_posts=200,
    backlog_events=1000,
    replay_window_s=20.0,
    naive_interval_s=10.0,
    naive_duration_s=25.0,
    naive_rate=1.0,
    watcher_messages=5,
    watcher_rate=0.4,
    watcher_burst=10,
    watcher_drain_s=25.0,
    operator_syncs=(20, 50),
    operator_idle_s=30.0,
    cluster_suspended_syncs=100,
    cluster_live_syncs=5,
    push_events=8,
    # Past the 10 s active hold: each event finds the worker without pokes idle.
    push_gap_s=(11.0, 15.0),
    delivery_burst=5,
    push_bursts=2,
    # Shorter than the 2 minutes (labelled with the measured length in the report).
    push_outage_s=30.0,
    push_idle_s=15.0,
    push_task_runs=3,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """count, mean, min, p50, p90, p95, p99, max (seconds in, seconds out)."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "mean": sum(values) / len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


# -- processes -------------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (scanning /proc once; a process tree is small)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the ppid; the command (field 2) may contain spaces, so split after ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass(frozen=True)
class Memory:
    """RSS of a process tree in MiB: now (`rss`) and the kernel's high-water mark (`hwm`).

    `hwm` sums each process's own peak, an upper bound of the tree's peak; for the single
    worker and operator processes measured here the two are the same thing.
    """

    processes: int
    rss_mib: float
    hwm_mib: float


def memory(pid: int) -> Memory:
    pids = [pid, *children(pid)]
    rss = sum(_status_kb(p, "VmRSS") for p in pids)
    hwm = sum(_status_kb(p, "VmHWM") for p in pids)
    return Memory(processes=len(pids), rss_mib=rss / 1024, hwm_mib=hwm / 1024)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- time series -------------------------------------------------------------------------------


class Sampler:
    """Calls `probe` every `interval_s` on a thread; `series` holds (monotonic t, value)."""

    def __init__(self, probe: Callable[[], float], *, interval_s: float = 0.25) -> None:
        self._probe = probe
        self._interval = interval_s
        self.series: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # A missed sample is fine (the endpoint not up yet): the series shows a gap.
            with contextlib.suppress(Exception):
                self.series.append((time.monotonic(), self._probe()))
            self._stop.wait(self._interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.series

    def first_reaching(self, value: float) -> float | None:
        """Monotonic time of the first sample >= `value`."""
        for t, v in self.series:
            if v >= value:
                return t
        return None


def wait_until(
    probe: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.5, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


# -- results ---------------------------------------------------------------------------------


@dataclass
class Check:
    """One figure against its target from the issue."""

    section: str
    name: str
    value: float | None
    unit: str
    target: str
    passed: bool | None
    note: str = ""


@dataclass
class Results:
    """Everything a run measured; `report` renders it."""

    profile: Profile
    started: float = field(default_factory=time.time)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    load: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)

    def record(self, section: str, **values: Any) -> None:
        self.figures.setdefault(section, {}).update(values)

    def check(
        self,
        section: str,
        name: str,
        value: float | None,
        *,
        unit: str,
        target: str,
        passed: bool | None,
        note: str = "",
    ) -> None:
        self.checks.append(Check(section, name, value, unit, target, passed, note))

    def problem(self, message: str) -> None:
        log(f"PROBLEM: {message}")
        self.problems.append(message)

    def mark_load(self, label: str) -> None:
        one, five, fifteen = loadavg()
        self.load.append(
            {
                "label": label,
                "at_s": round(time.time() - self.started, 1),
                "load1": one,
                "load5": five,
                "load15": fifteen,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": asdict(self.profile),
            "started_unix": self.started,
            "duration_s": round(time.time() - self.started, 1),
            "figures": self.figures,
            "checks": [asdict(c) for c in self.checks],
            "problems": self.problems,
            "load": self.load,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        }


@contextmanager
def section(results: Results, name: str) -> Iterator[None]:
    """Run one phase: log its time and load; an exception becomes a reported problem."""
    started = time.monotonic()
    log(f"== {name} ==")
    results.mark_load(f"{name} start")
    try:
        yield
    except Exception as exc:
        results.problem(f"{name}: {type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()
    finally:
        results.mark_load(f"{name} end")
        elapsed = time.monotonic() - started
        results.record("timings", **{name: round(elapsed, 1)})
        log(f"== {name}: {elapsed:.0f}s ==")
