"""`OffsetStore` in the AirflowAssetSync's own status (the worker in a cluster).

The worker owns `status.source`, `status.targets`, `status.lagSeconds` and
`status.replay`, and nothing else: every save is a JSON merge patch of exactly those keys
through the status subresource, so the operator's `conditions` and `observedGeneration` are
never touched.
A merge patch replaces lists wholesale, so `save_target` sends the whole `targets` list it
keeps in memory.

The kubernetes client is synchronous; calls run in a thread so the event loop keeps polling
and replaying while the API server answers (or is restarted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

from airflow_asset_sync.api.spec import ObjectRef
from airflow_asset_sync.api.status import ReplayStatus, SourceStatus, TargetStatus, WorkerStatus
from airflow_asset_sync.clients.kube import KubeApi
from airflow_asset_sync.worker.backoff import BackoffPolicy

log = logging.getLogger(__name__)

#: Saves retry while the API server is unreachable (restarts, upgrades) instead of crashing
#: the worker; the checkpoint is then simply written late, never skipped.
SAVE_BACKOFF = BackoffPolicy(initial=0.5, maximum=10.0)


class StatusOffsetStore:
    def __init__(self, kube: KubeApi, ref: ObjectRef) -> None:
        self._kube = kube
        self._ref = ref
        self._targets: dict[str, TargetStatus] = {}
        #: Saves come from the status flush and from replayers (parked events) at once; one
        #: patch at a time, its body built inside the lock, so an older body never lands
        #: after a newer one (a parked event saved, then overwritten by a stale list).
        self._lock = asyncio.Lock()

    async def load(self) -> WorkerStatus:
        body = await asyncio.to_thread(
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

    async def retain_targets(self, names: Collection[str]) -> None:
        """In memory only: the next `save_target` sends the list without the others."""
        self._targets = {name: t for name, t in self._targets.items() if name in names}

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
                await asyncio.to_thread(
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
