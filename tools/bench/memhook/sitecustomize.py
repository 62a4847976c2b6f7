"""Heap snapshots of a process the bench starts, taken on SIGUSR2 (profiling only).

Python imports `sitecustomize` at start from the first directory on its path that has one;
the operator memory profile (`bench.operator_memory`) puts this directory on the operator's
PYTHONPATH and sets `AAS_BENCH_TRACEMALLOC_DIR`. Nothing here runs otherwise, and nothing in
the product knows of it: the operator is profiled exactly as it ships.

Each SIGUSR2 writes `snapshot-N.pickle` (`tracemalloc.Snapshot.dump`) into that directory
and then `snapshot-N.done`, so the reader never loads a half-written file.
"""

from __future__ import annotations

import os

_OUTDIR = os.environ.get("AAS_BENCH_TRACEMALLOC_DIR")

if _OUTDIR:
    import gc
    import signal
    import tracemalloc
    from pathlib import Path
    from types import FrameType

    _SNAPSHOTS = Path(_OUTDIR)
    tracemalloc.start(int(os.environ.get("AAS_BENCH_TRACEMALLOC_FRAMES", "16")))
    _taken = [0]

    def _snapshot(signum: int, frame: FrameType | None) -> None:
        gc.collect()
        _taken[0] += 1
        path = _SNAPSHOTS / f"snapshot-{_taken[0]}"
        tracemalloc.take_snapshot().dump(f"{path}.pickle")
        Path(f"{path}.done").write_text("")

    signal.signal(signal.SIGUSR2, _snapshot)
