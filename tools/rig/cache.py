"""Where the rig keeps what it downloads and builds, and how it reports timings.

One folder, keyed by version (``bin/k8s-v1.34.4/``, ``kafka-3.9.1/``, ``venvs/airflow-3.3.2/``),
so a warm machine starts in seconds and a version bump provisions next to the old one.
A step is done when its ``.done`` stamp exists: a step killed half-way is redone, never used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(
    os.environ.get("AAS_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "airflow-asset-sync"
)


def log(message: str) -> None:
    print(f"[rig] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Print how long a provisioning or start-up phase took (CI reads these lines)."""
    started = time.monotonic()
    log(f"{name} ...")
    try:
        yield
    finally:
        log(f"{name}: {time.monotonic() - started:.1f}s")


def cached(path: Path, build: Callable[[Path], None], *, name: str) -> Path:
    """Run ``build(tmp)`` unless ``path`` already has a done stamp; then move tmp into place."""
    stamp = path.with_name(path.name + ".done")
    if stamp.exists() and path.exists():
        log(f"{name}: cached at {path}")
        return path
    with phase(f"{name} (cold)"):
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        build(tmp)
        tmp.rename(path)
        stamp.touch()
    return path


def cached_in_place(path: Path, build: Callable[[Path], None], *, name: str) -> Path:
    """Like `cached`, for things that must be built at their final path (virtualenvs embed it)."""
    stamp = path.with_name(path.name + ".done")
    if stamp.exists() and path.exists():
        log(f"{name}: cached at {path}")
        return path
    with phase(f"{name} (cold)"):
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        build(path)
        stamp.touch()
    return path
