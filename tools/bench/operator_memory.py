"""Where the operator's memory goes with many syncs: tracemalloc snapshots, before and after.

    PYTHONPATH=operator:tools:tests .venv/bin/python -m bench.operator_memory --syncs 200

A profiling tool, not a figure: tracemalloc slows the operator and adds its own memory, so
the RSS printed here is not the benchmark's (`make bench --only operator` is). It starts a
kube-apiserver, runs the operator with `bench/memhook` on its path (a heap snapshot on
SIGUSR2), takes one snapshot with no objects and one after `--syncs` syncs are Ready, and
prints the allocations that grew, grouped by the innermost frame in each library of
interest (kopf, kubernetes, aiohttp, ours...), so "who holds it" reads off directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

from bench.common import log, memory
from bench.operator_scale import (
    NAMESPACE,
    Harness,
    api_requests,
    apply_and_converge,
    clients,
    prepare,
    requests_between,
)
from rig.cache import ROOT
from rig.kube import KubeRig
from support import live

HOOK = Path(__file__).parent / "memhook"
#: Frames are attributed to the innermost one under any of these (path fragments).
LIBRARIES = (
    "airflow_asset_sync/",
    "site-packages/kopf/",
    "site-packages/kubernetes/",
    "site-packages/aiohttp/",
    "site-packages/urllib3/",
    "site-packages/pydantic",
    "site-packages/yaml/",
)


def _snapshot(pid: int, outdir: Path, number: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR2)
    done = outdir / f"snapshot-{number}.done"
    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {done.name} after 120 s")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(outdir / f"snapshot-{number}.pickle"))


def _owner(trace: tracemalloc.Traceback) -> str:
    """The innermost frame in a library of interest, else the innermost frame."""
    for frame in reversed(list(trace)):  # oldest first -> walk from the most recent
        if any(lib in frame.filename for lib in LIBRARIES):
            short = frame.filename.split("site-packages/")[-1].split("operator/")[-1]
            return f"{short}:{frame.lineno}"
    if not len(trace):
        return "?"
    return f"{trace[-1].filename}:{trace[-1].lineno}"


def grown(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, *, top: int
) -> list[tuple[str, int, int]]:
    """(owner, bytes grown, blocks grown), largest first."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for stat in after.compare_to(before, "traceback"):
        owner = _owner(stat.traceback)
        sizes[owner][0] += stat.size_diff
        sizes[owner][1] += stat.count_diff
    rows = sorted(((k, v[0], v[1]) for k, v in sizes.items()), key=lambda r: -r[1])
    return rows[:top]


def by_library(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for stat in after.compare_to(before, "traceback"):
        owner = _owner(stat.traceback)
        library = owner.split("/")[0] if "/" in owner else "other"
        totals[library] += stat.size_diff
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--syncs", type=int, default=200)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after all Ready")
    parser.add_argument(
        "--no-trace", action="store_true", help="RSS only: no tracemalloc (the real figure)"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the operator (repeatable)"
    )
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    workdir = Path(tempfile.mkdtemp(prefix="aas-opmem-"))
    outdir = workdir / "snapshots"
    outdir.mkdir()
    kube = KubeRig(workdir=workdir / "kube")
    kube.start()
    operator = None
    try:
        kubeconfig = prepare(kube)
        apps, custom = clients(kube.kubeconfig)
        harness = Harness(apps=apps, custom=custom)
        operator = live.OperatorProcess(
            kube,
            name="memory",
            kubeconfig=kubeconfig,
            env=extra_env
            if args.no_trace
            else {
                **extra_env,
                "PYTHONPATH": f"{ROOT / 'operator'}:{HOOK}",
                "AAS_BENCH_TRACEMALLOC_DIR": str(outdir),
                "AAS_BENCH_TRACEMALLOC_FRAMES": str(args.frames),
            },
        )
        operator.start()
        assert operator.server.proc is not None
        pid = operator.server.proc.pid
        time.sleep(2.0)
        idle = memory(pid)
        if args.no_trace:
            counted = api_requests(kube)
            seen = apply_and_converge(kube, harness, syncs=args.syncs)
            for request, count in requests_between(counted, api_requests(kube)).items():
                print(f"  {count:7d} {request}")
            ready_s = (seen.t_ready or float("nan")) - seen.t0
            time.sleep(args.settle)
            mem = memory(pid)
            print(
                f"{seen.ready}/{args.syncs} Ready after {ready_s:.1f}s (apply"
                f" {seen.t_applied - seen.t0:.1f}s, load {os.getloadavg()[0]:.1f}); RSS idle"
                f" {idle.rss_mib:.1f} MiB -> {mem.rss_mib:.1f} MiB (HWM {mem.hwm_mib:.1f})"
            )
            return
        before = _snapshot(pid, outdir, 1)
        seen = apply_and_converge(kube, harness, syncs=args.syncs)
        log(f"{seen.ready}/{args.syncs} Ready in {NAMESPACE}; settling {args.settle:.0f}s")
        time.sleep(args.settle)
        after = _snapshot(pid, outdir, 2)
        mem = memory(pid)
        print(
            f"RSS idle {idle.rss_mib:.1f} MiB -> {mem.rss_mib:.1f} MiB (HWM {mem.hwm_mib:.1f});"
            f" traced {sum(s.size for s in before.statistics('filename')) / 2**20:.1f} -> "
            f"{sum(s.size for s in after.statistics('filename')) / 2**20:.1f} MiB"
        )
        print("\ngrowth by library (MiB):")
        for library, size in by_library(before, after).items():
            print(f"  {size / 2**20:8.2f}  {library}")
        print(f"\ntop {args.top} owners of the growth:")
        for owner, size, count in grown(before, after, top=args.top):
            print(f"  {size / 2**20:8.2f} MiB {count:8d} blocks  {owner}")
    finally:
        if operator is not None:
            operator.stop()
        kube.stop()


if __name__ == "__main__":
    main()
