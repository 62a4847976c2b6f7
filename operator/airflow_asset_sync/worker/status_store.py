"""`OffsetStore` in the AirflowAssetSync's own status (the worker in a cluster).

The worker owns `status.source`, `status.targets`, `status.lagSeconds` and
`status.replay`, and nothing else: every save is a JSON merge patch of exactly those keys
through the status subresource, so the operator's `conditions` and `observedGeneration` are
never touched.
A merge patch replaces lists wholesale, so `save_target` sends the whole `targets` list it
keeps in memory.

The kubernetes client is synchronous; calls run in a thread so the event loop keeps polling
and replaying while the API server answers (or is restarted).

One owner for every write: the poller (checkpoints), the status flush and the replayers
(parked events) all save through one store, and its patches go out one at a time, in the
order they were asked for. Two things hold that order. An `asyncio.Lock` around building
the body and sending it (with its retries), so an older body never lands after a newer one.
And one writer thread for all requests, because a save whose task is cancelled (the stop
sequence cancels the periodic flush, then flushes once more) leaves the lock at once while
its request goes on in its thread: with a thread per request the next save was sent beside
it, and the older body could land last.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from airflow_asset_sync.api.spec import ObjectRef
from airflow_asset_sync.api.status import ReplayStatus, SourceStatus, TargetStatus, WorkerStatus
from airflow_asset_sync.clients.kube import KubeApi
from airflow_asset_sync.worker.backoff import BackoffPolicy

log = logging.getLogger(__name__)

R = TypeVar("R")

#: Saves retry while the API server is unreachable (restarts, upgrades) instead of crashing
#: the worker; the checkpoint is then simply written late, never skipped.
SAVE_BACKOFF = BackoffPolicy(initial=0.5, maximum=10.0)


class StatusOffsetStore:
    def __init__(self, kube: KubeApi, ref: ObjectRef) -> None:
        self._kube = kube
        self._ref = ref
        self._targets: dict[str, TargetStatus] = {}
        #: Saves come from the poller, the status flush and replayers (parked events) at
        #: once; one patch at a time, its body built inside the lock, so an older body never
        #: lands after a newer one (a parked event saved, then overwritten by a stale list).
        self._lock = asyncio.Lock()
        #: The one thread every request runs in, in the order asked (see the module doc).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-writer")

    async def _in_writer(self, call: Callable[..., R], **kwargs: Any) -> R:
        """Run a kube client call in the writer thread, after every call asked before it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(call, **kwargs))

    async def load(self, targets: Collection[str] | None = None) -> WorkerStatus:
        """The status as stored; with `targets`, the others' entries are pruned in memory and
        left out of the next targets patch (which also recomputes ``lagSeconds``)."""
        body = await self._in_writer(
            self._kube.get_sync, namespace=self._ref.namespace, name=self._ref.name
        )
        if body is None:
            raise LookupError(f"AirflowAssetSync {self._ref} does not exist")
        raw = body.get("status") or {}
        status = WorkerStatus.model_validate(
            {
                "source": raw.get("source") or {},
                "targets": raw.get("targets") or [],
                "replay": raw.get("replay"),
            }
        )
        if targets is not None:
            status.targets = [t for t in status.targets if t.name in targets]
        self._targets = {t.name: t for t in status.targets}
        return status

    async def save_source(self, source: SourceStatus) -> None:
        # `source` is an object, so the patch merges into it: cleared fields must be sent as
        # null. (`targets` is a list, which a merge patch replaces whole.)
        async with self._lock:
            await self._patch({"source": source.to_merge_patch()})

    async def save_target(self, target: TargetStatus) -> None:
        self._targets[target.name] = target
        async with self._lock:
            await self._patch(self._targets_patch())

    async def save_replay(self, replay: ReplayStatus) -> None:
        # An object, like `source`: cleared fields are sent as null.
        async with self._lock:
            await self._patch({"replay": replay.to_merge_patch()})

    def _targets_patch(self) -> dict[str, Any]:
        """The targets list and ``lagSeconds``, the largest lag of any target (the ``Lag``
        printer column: one figure for every target, not the first one's)."""
        return {
            "targets": [t.to_patch() for t in self._targets.values()],
            "lagSeconds": WorkerStatus.largest_lag(self._targets.values()),
        }

    async def _patch(self, status: dict[str, Any]) -> None:
        backoff = SAVE_BACKOFF.start()
        while True:
            try:
                await self._in_writer(
                    self._kube.patch_sync_status,
                    namespace=self._ref.namespace,
                    name=self._ref.name,
                    status=status,
                )
                return
            except Exception as exc:
                if not getattr(exc, "retriable", False):
                    raise
                delay = backoff.next()
                log.warning(
                    "status patch failed; retrying",
                    extra={"sync": str(self._ref), "error": str(exc), "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
