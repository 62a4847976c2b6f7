"""Where the worker keeps its checkpoint and counters: the worker-owned part of status.

In a cluster that is ``status.source`` and ``status.targets`` of the AirflowAssetSync (a
Kubernetes implementation lives with the kube client); standalone it is a JSON file.

The protocol is shaped for the Kubernetes case:

- The worker only ever writes `SourceStatus` and `TargetStatus`, never `conditions` or
  `observedGeneration` (the operator owns those), so an implementation sends a merge patch of
  ``{"status": {"source": ...}}`` or ``{"status": {"targets": [...]}}`` and nothing else.
- JSON merge patch replaces lists wholesale, so `save_target` cannot patch one list element:
  an implementation keeps the list it loaded, replaces the entry with the same ``name`` and
  sends the whole list (which is small: one entry per target, capped inner lists).
- Methods are async because the Kubernetes implementation does network I/O; a synchronous
  client can be wrapped with ``asyncio.to_thread``.

Ordering promise the poller relies on: `save_source` is called only after the checkpoint's
events were published. A save may be slow or fail; the checkpoint then simply stays behind,
which costs re-reads (absorbed by dedup), never lost events.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from airflow_asset_sync.api.status import ReplayStatus, SourceStatus, TargetStatus, WorkerStatus


class OffsetStore(Protocol):
    async def load(self, targets: Collection[str] | None = None) -> WorkerStatus:
        """The worker status as last saved; an empty `WorkerStatus` the first time.

        With `targets` (the spec's target names), entries of other targets (removed from
        the spec) are pruned here, from the status returned and from every later save, so a
        removed target's figures and lag do not outlive it.
        """
        ...

    async def save_source(self, source: SourceStatus) -> None:
        """Replace ``status.source`` (checkpoint and source counters)."""
        ...

    async def save_target(self, target: TargetStatus) -> None:
        """Replace the ``status.targets`` entry named ``target.name``, keeping the others."""
        ...

    async def save_replay(self, replay: ReplayStatus) -> None:
        """Replace ``status.replay`` (the outcome of the last ``spec.replay``)."""
        ...


class StatusFileCorrupt(RuntimeError):
    """The offsets file exists but cannot be read; refusing to start from scratch silently."""


class FileOffsetStore:
    """`OffsetStore` in a JSON file, for standalone (``run``) mode.

    Writes go to a temporary file in the same directory, are fsynced, and replace the old file
    with ``os.replace`` (atomic on POSIX): a crash mid-write leaves the old file or the new one,
    never half of each. A corrupt file stops the worker instead of being ignored, because
    starting over would re-apply ``startFrom`` and could skip or re-send events.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._status: WorkerStatus | None = None

    @property
    def path(self) -> Path:
        return self._path

    def _read(self) -> WorkerStatus:
        if not self._path.exists():
            return WorkerStatus()
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            return WorkerStatus.model_validate(raw)
        except ValueError as exc:
            raise StatusFileCorrupt(f"cannot read offsets file {self._path}: {exc}") from exc

    def _current(self) -> WorkerStatus:
        if self._status is None:
            self._status = self._read()
        return self._status

    async def load(self, targets: Collection[str] | None = None) -> WorkerStatus:
        self._status = self._read()
        if targets is not None:
            kept = [t for t in self._status.targets if t.name in targets]
            if len(kept) != len(self._status.targets):
                self._status.targets = kept
                self._status.lag_seconds = WorkerStatus.largest_lag(kept)
                self._write(self._status)
        return self._status.model_copy(deep=True)

    async def save_source(self, source: SourceStatus) -> None:
        status = self._current()
        status.source = source.model_copy(deep=True)
        self._write(status)

    async def save_target(self, target: TargetStatus) -> None:
        status = self._current()
        status.targets = [t for t in status.targets if t.name != target.name]
        status.targets.append(target.model_copy(deep=True))
        status.targets.sort(key=lambda t: t.name)
        status.lag_seconds = WorkerStatus.largest_lag(status.targets)
        self._write(status)

    async def save_replay(self, replay: ReplayStatus) -> None:
        status = self._current()
        status.replay = replay.model_copy(deep=True)
        self._write(status)

    def _write(self, status: WorkerStatus) -> None:
        data = json.dumps(status.to_patch(), indent=2, sort_keys=True).encode()
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (the directory entry), not only the file's bytes."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
