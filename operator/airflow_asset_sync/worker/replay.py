"""Replay on demand (``spec.replay``): re-read a window of source history and publish it again.

When: at worker start (a spec change rolls the pod, so that is when a new replay is seen), if
``spec.replay.id`` differs from ``status.replay.id`` (`due`), or ``status.replay`` is still
Running with that id: the worker stopped mid-way, and the replay starts again from ``from``.
Starting again rather than resuming is safe because the targets skip, by marker, every event
they already have (`replay_dedup`); it costs re-reading the source.

What: the source events in ``[from, until]``, ``until`` being the spec's or else the live
checkpoint when the replay starts (what is after it is the live stream's), with the live
poller's rules (a copy written by a sync only if a target is off its path, `forwarding`;
``spec.assets``). They go through the same publisher as live events, tagged with a
`ReplayTag`, at most `max_publish` per publish, in source order. Target rewrite rules
apply in the replayers as for live events.

Pace: the source is read one page at a time (the client's page limit) with `pause` between
pages, the poller's pace while events flow: never more than the live catch-up asks of the
source, which reads up to four pages at once. A 3.x source is read oldest first from
``from`` and published page by page. A 2.x source has no time filter: it is read newest
first down to ``from``, and the window is held in memory to publish it oldest first (a
consumer of the target reads the newest event last, as live), up to `MAX_BUFFERED` events.

Refused, phase Failed and nothing published: a ``from`` in the future (CEL has no clock, so
this is the worker's check); a window larger than `MAX_BUFFERED` on a 2.x source; a target
that cannot be reached when the replay starts (within `TARGET_WAIT_S`). A source that fails
mid-way is retried with the poller's back-off, the message saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from airflow_asset_sync.api.events import Envelope, ReplayTag, SourceEvent
from airflow_asset_sync.api.spec import Replay
from airflow_asset_sync.api.status import ReplayPhase, ReplayStatus, WorkerStatus
from airflow_asset_sync.api.transport import Publisher
from airflow_asset_sync.clients.airflow.base import AirflowClient, EventQuery
from airflow_asset_sync.worker.clock import Clock, sleep_or_stop
from airflow_asset_sync.worker.filters import EventFilter
from airflow_asset_sync.worker.forwarding import decide_event
from airflow_asset_sync.worker.offsets import OffsetStore
from airflow_asset_sync.worker.poller import MAX_PUBLISH, POLL_ERROR_BACKOFF
from airflow_asset_sync.worker.scan import pages

log = logging.getLogger(__name__)

#: Events of a 2.x source's window held in memory at most (see the module docstring).
MAX_BUFFERED = 200_000
#: Seconds a replay waits at its start for every target to connect and answer.
TARGET_WAIT_S = 30.0
#: Seconds between two looks at the targets while waiting for them.
TARGET_RETRY_S = 2.0
#: Longest `status.replay.message` (client errors can be long; status stays small).
MAX_MESSAGE = 1024


def due(replay: Replay | None, current: ReplayStatus | None) -> bool:
    """Whether `replay` (the spec's) is to run now, given the status of the last one."""
    if replay is None:
        return False
    return current is None or current.id != replay.id or current.phase == "Running"


def abandoned(replay: Replay | None, current: ReplayStatus | None, now: datetime) -> bool:
    """A Running replay whose ``spec.replay`` was removed: marked Failed, so it stops showing
    as Running forever. True when `current` was changed."""
    if replay is not None or current is None or current.phase != "Running":
        return False
    current.phase = "Failed"
    current.finished_at = now
    current.message = "spec.replay was removed before the replay finished"
    return True


def window_problem(replay: Replay, now: datetime) -> str | None:
    """Why the window cannot be replayed now, naming the field; None when it can."""
    if replay.from_ > now:
        return (
            f"spec.replay.from {replay.from_.isoformat()} is in the future (now "
            f"{now.isoformat()}): nothing replayed"
        )
    return None


class ReplayRun:
    """One replay of one sync, from the worker's start until done (or the worker stops)."""

    def __init__(
        self,
        *,
        replay: Replay,
        status: WorkerStatus,
        source: AirflowClient,
        targets: Callable[[], Mapping[str, AirflowClient]],
        target_names: Sequence[str],
        publisher: Publisher,
        store: OffsetStore,
        sync: str,
        origin: str,
        event_filter: EventFilter,
        clock: Clock,
        pause: float,
        max_publish: int = MAX_PUBLISH,
        target_wait: float = TARGET_WAIT_S,
        forward_to: Sequence[str] = (),
        max_hops: int = 1,
    ) -> None:
        self._replay = replay
        self._worker_status = status
        self._source = source
        self._targets = targets
        self._target_names = list(target_names)
        self._publisher = publisher
        self._store = store
        self._sync = sync
        self._origin = origin
        self._filter = event_filter
        self._clock = clock
        self._pause = pause
        self._max_publish = max(1, max_publish)
        self._target_wait = target_wait
        #: The targets' identities and ``spec.maxHops``: copies written by a sync are
        #: re-sent by the poller's rule (`forwarding`); none by default.
        self._forward_to = tuple(forward_to)
        self._max_hops = max_hops
        self._tag = ReplayTag(id=replay.id, from_=replay.from_)
        #: Sort key of the last event handled (published or passed over): a retry after a
        #: source failure, and a page re-read after rows shifted, go on from there.
        self._last: tuple[datetime, int] | None = None
        self._log_extra = {"sync": sync, "replay": replay.id}

    async def run(self, stop: asyncio.Event) -> None:
        """Run the replay; never raises (its outcome is ``status.replay``)."""
        replay, previous = self._replay, self._worker_status.replay
        status = ReplayStatus(
            id=replay.id,
            from_=replay.from_,
            until=replay.until,
            phase="Running",
            started_at=self._clock.now(),
        )
        if previous is not None and previous.id == replay.id:
            status.message = "started again from spec.replay.from: the worker stopped mid-way"
        self._worker_status.replay = status
        try:
            await self._run(status, stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, or a store that refuses: said, not crashing the sync
            status.phase = "Failed"
            status.finished_at = self._clock.now()
            status.message = f"replay failed: {type(exc).__name__}: {exc}"[:MAX_MESSAGE]
            log.exception("replay failed", extra=self._log_extra)
        if status.phase != "Running":
            try:
                await self._store.save_replay(status)
            except Exception as exc:
                log.warning(
                    "replay outcome not saved; the status flush retries it",
                    extra={**self._log_extra, "error": str(exc)},
                )

    async def _run(self, status: ReplayStatus, stop: asyncio.Event) -> None:
        now = self._clock.now()
        problem = window_problem(self._replay, now)
        if problem is None:
            await self._store.save_replay(status)
            problem = await self._targets_problem(stop)
        if stop.is_set():
            return
        if problem is not None:
            log.warning("replay refused", extra={**self._log_extra, "reason": problem})
            self._finish(status, "Failed", problem)
            return
        checkpoint = self._worker_status.source.checkpoint.timestamp
        until = min(t for t in (self._replay.until, checkpoint, now) if t is not None)
        status.until = until
        log.info(
            "replay started",
            extra={
                **self._log_extra,
                "from": self._replay.from_.isoformat(),
                "until": until.isoformat(),
            },
        )
        if until < self._replay.from_:
            self._finish(
                status,
                "Succeeded",
                "nothing to replay: the live checkpoint is before spec.replay.from, so the "
                "live sync delivers that part itself",
            )
            return
        backoff = POLL_ERROR_BACKOFF.start()
        while True:
            try:
                finished = await self._window(status, until, stop)
            except Exception as exc:
                delay = backoff.next()
                error = f"reading the source failed, retrying: {type(exc).__name__}: {exc}"
                status.message = error[:MAX_MESSAGE]
                log.warning(
                    "replay: reading the source failed; retrying",
                    extra={**self._log_extra, "error": status.message, "delay_s": delay},
                )
                if await sleep_or_stop(self._clock, stop, delay):
                    return
                continue
            if finished == "stopped":
                return
            if finished == "too large":
                self._finish(
                    status,
                    "Failed",
                    f"the window holds more than {MAX_BUFFERED} events of an Airflow 2.x "
                    "source, which must be read newest first into memory: replay it in parts "
                    "(spec.replay.until)",
                )
                return
            self._finish(
                status,
                "Succeeded",
                f"{status.events_published} of {status.events_read} events read were "
                "published; targets skip those they already have",
            )
            return

    async def _targets_problem(self, stop: asyncio.Event) -> str | None:
        """None once every target answers; else, after `target_wait`, which ones do not."""
        deadline = self._clock.monotonic() + self._target_wait
        while True:
            clients = self._targets()
            problems: list[str] = []
            for name in self._target_names:
                client = clients.get(name)
                if client is None:
                    error = self._worker_status.target(name).last_error or "not connected yet"
                    problems.append(f"target {name} cannot be reached ({error})")
                    continue
                try:
                    await client.list_events(EventQuery(limit=1))
                except Exception as exc:
                    problems.append(
                        f"target {name} cannot be reached ({type(exc).__name__}: {exc})"
                    )
            if not problems:
                return None
            if self._clock.monotonic() >= deadline:
                return "; ".join(problems) + ": nothing replayed; set a new spec.replay.id to retry"
            if await sleep_or_stop(self._clock, stop, TARGET_RETRY_S):
                return None

    async def _window(self, status: ReplayStatus, until: datetime, stop: asyncio.Event) -> str:
        """Publish the window from `_last` on: "done", "stopped" or "too large"."""
        since = self._replay.from_ if self._last is None else self._last[0]
        ascending = self._source.api_version == "v2"
        held: dict[int, SourceEvent] = {}
        async for page in pages(self._source, since, until=until):
            fresh = [e for e in page.events if self._unhandled(e, until)]
            if ascending:
                await self._publish(sorted(fresh, key=lambda e: e.sort_key), status)
            else:
                held.update((e.id, e) for e in fresh)
                if len(held) > MAX_BUFFERED:
                    return "too large"
            if await sleep_or_stop(self._clock, stop, self._pause):
                return "stopped"
        await self._publish(sorted(held.values(), key=lambda e: e.sort_key), status)
        return "done"

    def _unhandled(self, event: SourceEvent, until: datetime) -> bool:
        if not self._replay.from_ <= event.timestamp <= until:
            return False
        return self._last is None or event.sort_key > self._last

    def _resent(self, event: SourceEvent) -> bool:
        """What the poller would publish: native events, and copies some target needs."""
        decision = decide_event(
            event, source=self._origin, targets=self._forward_to, max_hops=self._max_hops
        )
        return decision in ("native", "forwarded") and self._filter.rejection(event) is None

    async def _publish(self, events: Sequence[SourceEvent], status: ReplayStatus) -> None:
        """Publish `events` (ascending) in chunks; counters and `_last` move after each."""
        chunk: list[Envelope] = []
        handled = 0
        for index, event in enumerate(events):
            handled += 1
            if self._resent(event):
                chunk.append(
                    Envelope(sync=self._sync, origin=self._origin, event=event, replay=self._tag)
                )
            if len(chunk) < self._max_publish and index < len(events) - 1:
                continue
            if chunk:
                await self._publisher.publish(chunk)
            status.events_read += handled
            status.events_published += len(chunk)
            self._last = event.sort_key
            chunk, handled = [], 0

    def _finish(self, status: ReplayStatus, phase: ReplayPhase, message: str) -> None:
        status.phase = phase
        status.finished_at = self._clock.now()
        status.message = message[:MAX_MESSAGE]
        log.info(
            "replay finished",
            extra={**self._log_extra, "phase": status.phase, "outcome": message},
        )
