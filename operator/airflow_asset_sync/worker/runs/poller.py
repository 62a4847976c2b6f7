"""The completions poller: publish finished DAG runs and tasks, then move their checkpoint.

It runs beside the events poller (`worker.poller`), over the same publisher, so completions
travel the same topic (or in-process channel), replayer, marker and dedup as asset events.
Its cursor position is ``status.source.runs.checkpoint``, saved with the rest of
``status.source`` after each publish, so a restart resumes there: nothing is lost (the
checkpoint never passes an unpublished completion) and nothing repeats (the published ids
are in ``seen_ids``; ids already in Kafka are skipped through ``published_keys``; the
replayer's marker check covers the rest, as it does for events).

Why the shared `gate`: after a crash, a replayer checks only its first ``commit_batch``
deliveries against the target (`worker.redelivery`). Each poller holds at most one publish
that is not checkpointed yet; two pollers publishing at once could hold two. Holding the
gate from publish to checkpoint keeps the bound what it was.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from airflow_asset_sync.api.events import Envelope
from airflow_asset_sync.api.spec import StartFrom
from airflow_asset_sync.api.status import RunsStatus, SourceStatus
from airflow_asset_sync.api.transport import Publisher
from airflow_asset_sync.worker.backoff import BackoffPolicy
from airflow_asset_sync.worker.clock import Clock, sleep_or_stop
from airflow_asset_sync.worker.cursor import next_checkpoint, resolve_start
from airflow_asset_sync.worker.metrics import WorkerMetrics
from airflow_asset_sync.worker.offsets import OffsetStore
from airflow_asset_sync.worker.runs.cursor import CompletionCursor

log = logging.getLogger(__name__)

#: Back-off after a failed read or publish of completions.
ERROR_BACKOFF = BackoffPolicy(initial=1.0, maximum=60.0)


@dataclass(frozen=True)
class CompletionSettings:
    sync: str
    origin: str
    poll_interval_s: float
    start_from: StartFrom
    overlap: timedelta
    max_publish: int


class CompletionPoller:
    """Reads completions through a `CompletionCursor` and publishes them as events."""

    def __init__(
        self,
        *,
        settings: CompletionSettings,
        cursor: CompletionCursor,
        publisher: Publisher,
        store: OffsetStore,
        status: SourceStatus,
        clock: Clock,
        metrics: WorkerMetrics,
        gate: asyncio.Lock,
    ) -> None:
        self._settings = settings
        self._cursor = cursor
        self._publisher = publisher
        self._store = store
        self._source = status
        if status.runs is None:
            status.runs = RunsStatus()
        self.status: RunsStatus = status.runs
        self._clock = clock
        self._metrics = metrics
        self._gate = gate
        self._published_keys: set[int] | None = None
        self._log_extra = {"sync": settings.sync, "origin": settings.origin}

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``pollInterval`` (at once while a read hits its bound) until `stop`."""
        backoff = ERROR_BACKOFF.start()
        while not stop.is_set():
            try:
                more = await self.poll_once()
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                self._metrics.completion_poll_errors.inc()
                delay = backoff.next()
                log.warning(
                    "reading completed DAG runs failed; retrying",
                    extra={**self._log_extra, "error": self.status.last_error, "delay_s": delay},
                )
            else:
                backoff.reset()
                delay = 0.0 if more else self._settings.poll_interval_s
            if await sleep_or_stop(self._clock, stop, delay):
                break

    async def _initialize(self) -> None:
        if self._published_keys is None:
            keys = await self._publisher.published_keys(self._settings.origin)
            self._published_keys = {k for k in keys if k < 0}
        if not self.status.checkpoint.initialized:
            self.status.checkpoint = await resolve_start(
                self._cursor, self._settings.start_from, overlap=self._settings.overlap
            )
            await self._store.save_source(self._source)
            log.info(
                "completions start position resolved",
                extra={**self._log_extra, "start_from": str(self._settings.start_from)},
            )

    async def poll_once(self) -> bool:
        """One read, published in chunks, each followed by its checkpoint; returns ``more``."""
        await self._initialize()
        assert self._published_keys is not None
        previous = self.status.checkpoint
        batch = await self._cursor.read(previous)
        events = batch.events
        size = self._settings.max_publish
        for start in range(0, max(len(events), 1), size):
            handled = events[: start + size]
            chunk = [
                Envelope(sync=self._settings.sync, origin=self._settings.origin, event=e)
                for e in events[start : start + size]
                if e.id not in self._published_keys
            ]
            async with self._gate:
                if chunk:
                    await self._publisher.publish(chunk)
                checkpoint = next_checkpoint(
                    previous, batch=batch, handled=handled, overlap=self._settings.overlap
                )
                self.status.published += len(chunk)
                if checkpoint != self.status.checkpoint or chunk:
                    self.status.checkpoint = checkpoint
                    await self._store.save_source(self._source)
            for envelope in chunk:
                kind = "dag_run" if envelope.event.source_task_id is None else "task"
                self._metrics.completions_published.labels(kind=kind).inc()
            if chunk:
                log.info(
                    "completions published",
                    extra={
                        **self._log_extra,
                        "count": len(chunk),
                        "runs": [e.event.source_run_id for e in chunk[:10]],
                    },
                )
        self.status.last_poll_time = self._clock.now()
        self.status.last_error = None
        return batch.more
