"""Sampling profiles of a running worker or operator with py-spy (attached, nothing changed).

`--profile` turns it on; profiles are taken in the same phases as the figures, so a run
with profiling is for finding where time goes, not for the figures themselves (py-spy's
sampling costs the target a little CPU). Output per profile: the raw collapsed stacks
(`profile-<label>.txt`, flamegraph.pl / speedscope input) and a summary of the functions
with the most samples, by self time and including callees, in the report.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import log
from rig.procs import Server

RATE_HZ = 100


def py_spy() -> Path | None:
    found = Path(sys.executable).parent / "py-spy"
    if found.exists():
        return found
    which = shutil.which("py-spy")
    return Path(which) if which else None


@dataclass
class Profiler:
    """One py-spy recording at a time; `summaries` collects what each produced."""

    outdir: Path
    #: Called when py-spy is missing (the bench re-installs requirements/bench.txt).
    ensure: Callable[[], None] | None = None
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None
    _label: str = ""
    _path: Path | None = None

    def start(self, server: Server, *, label: str) -> None:
        binary = py_spy()
        if binary is None and self.ensure is not None:
            self.ensure()
            binary = py_spy()
        if binary is None or server.proc is None:
            log("py-spy not available; no profile")
            return
        self.stop()
        self._label = label
        self._path = self.outdir / f"profile-{label}.txt"
        log(f"profiling {server.name} (pid {server.proc.pid}) -> {self._path.name}")
        self._proc = subprocess.Popen(
            [
                str(binary),
                "record",
                "--pid",
                str(server.proc.pid),
                "--rate",
                str(RATE_HZ),
                "--format",
                "raw",
                "--nonblocking",
                "--idle",  # kept, so the busy share can be told; idle frames are set apart
                "-o",
                str(self._path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if self._path is None or not self._path.exists():
            log(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
            return
        self.summaries[self._label] = summarize(self._path)


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self samples and by inclusive samples, from collapsed stacks.

    Idle samples (a thread waiting in select/epoll/sleep, or a lock) are counted apart, so
    "where the CPU goes" is not drowned by threads that wait, which is most of an asyncio
    worker's life.
    """
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        if _is_idle(leaf):
            idle += count
            continue
        self_counts[_short(leaf)] += count
        for frame in set(map(_short, frames)):
            incl_counts[frame] += count
    busy = total - idle
    return {
        "file": path.name,
        "samples": total,
        "busy_samples": busy,
        "busy_share": round(busy / total, 3) if total else 0.0,
        "top_self": [
            (f, n, round(n / busy, 3) if busy else 0.0) for f, n in self_counts.most_common(top)
        ],
        "top_inclusive": [
            (f, n, round(n / busy, 3) if busy else 0.0)
            for f, n in incl_counts.most_common(top * 2)
            if not f.startswith(("<module>", "run (", "_run_once", "run_forever", "_run (asyncio"))
        ][:top],
    }


#: Leaf functions (the part after the last dot) where a thread waits rather than runs.
_IDLE_LEAVES = frozenset(
    {
        "select",
        "poll",
        "epoll",
        "wait",
        "sleep",
        "acquire",
        "accept",
        "read",
        "readinto",
        "recv",
        "recv_into",
        "get",
        "_worker",
    }
)


def _is_idle(frame: str) -> bool:
    return frame.split(" (", 1)[0].rsplit(".", 1)[-1] in _IDLE_LEAVES


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`: lines vary, functions don't."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({tail})"
