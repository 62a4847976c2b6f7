"""The poller: read new source events, publish them, and only then move the checkpoint.

One iteration (`Poller.poll_once`):

1. Resolve ``startFrom`` once (checkpoint not yet initialized) and save that checkpoint.
2. Read a batch through the cursor.
3. Hold back what cannot be delivered yet (invalid rows, see below).
4. Drop events that must not be forwarded, each counted:
   - already in the transport (ids from ``publisher.published_keys`` at start: a crash
     between publish and checkpoint re-reads them);
   - copies written by a sync (their ``extra`` carries a marker) that no target needs:
     every target is on the marker's path, or the copy would go past ``spec.maxHops``
     (`forwarding`). So an A <-> B pair never ping-pongs, while a copy in B still goes on to
     C (chains, hubs, rings). Any marker counts, not only ours. A copy some target needs is
     published once; the replayers of targets on its path drop it (per target);
   - filtered out by ``spec.assets``.
5. Wrap the rest in `Envelope`s and ``await publisher.publish``, at most
   `PollSettings.max_publish` at a time (in batch order).
6. Only after a publish returns, compute and save the checkpoint past its events.

The checkpoint never passes an event that was not delivered: if publish raises, nothing more
is saved and the events from that publish on are read again after a back-off.

Why publishes are bounded: after a crash, everything published but not checkpointed is
published again, and a replayer checks only its first `commit_batch` deliveries after a start
against the target; `redelivery` gives the figures, and `redelivery.check_publish_bound`
holds `max_publish` (<= `commit_batch`) where the worker is wired.

Invalid rows (``EventPage.invalid``): a row the client could not validate cannot be
delivered, and skipping it at once would lose it to a transient fault (a truncated response,
a server mid-upgrade). So the poller holds the checkpoint below it and retries: while a row
has failed fewer than `max_invalid_retries` consecutive polls, only events before it are
handled (when the client tells its position through ``timestamp`` / ``event_id`` attributes
on the `InvalidRow`) or nothing at all (position unknown). After that the row is skipped for
good: counted in ``eventsInvalid``, logged at error level with its event id, remembered so it
is not counted again. A restart forgets that memory: the row is then held and counted once
more.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_asset_sync.api.events import Envelope, SourceEvent
from airflow_asset_sync.api.redaction import masked_keys
from airflow_asset_sync.api.spec import DEFAULT_MAX_HOPS, AssetFilter, StartFrom, SyncSpec
from airflow_asset_sync.api.status import Checkpoint, SourceGap, SourceStatus
from airflow_asset_sync.api.transport import Publisher
from airflow_asset_sync.clients.airflow.base import InvalidRow
from airflow_asset_sync.worker.backoff import BackoffPolicy
from airflow_asset_sync.worker.clock import Clock, sleep_or_stop, sleep_or_wake
from airflow_asset_sync.worker.cursor import (
    DEFAULT_OVERLAP,
    Batch,
    Cursor,
    next_checkpoint,
    resolve_start,
)
from airflow_asset_sync.worker.failures import FailureReport
from airflow_asset_sync.worker.filters import EventFilter
from airflow_asset_sync.worker.forwarding import Decision, decide_event
from airflow_asset_sync.worker.health import Health
from airflow_asset_sync.worker.metrics import WorkerMetrics
from airflow_asset_sync.worker.offsets import OffsetStore
from airflow_asset_sync.worker.redelivery import COMMIT_BATCH

log = logging.getLogger(__name__)

#: Invalid rows remembered as skipped (so each is counted once per process).
_SKIPPED_MEMORY = 1000
#: Assets remembered as warned about masked values (one warning per asset and process).
_REDACTED_MEMORY = 1000

InvalidKey = tuple[str, object]

#: Most envelopes per publish by default; the checkpoint is saved after each. The replayers'
#: default `commit_batch`, their window of deliveries checked against the target after a
#: restart (see `redelivery`).
MAX_PUBLISH = COMMIT_BATCH

#: Back-off after a failed poll (source down, publish failed).
POLL_ERROR_BACKOFF = BackoffPolicy(initial=1.0, maximum=60.0)


@dataclass(frozen=True)
class PollResult:
    """What one iteration did; `more` asks for an immediate re-poll."""

    read: int
    published: int
    filtered: int
    looped: int
    already_published: int
    held: int
    more: bool
    #: Copies written by a sync that were published to go on (part of `published`).
    forwarded: int = 0


#: While events flow, the source is polled this many times more often than ``pollInterval``.
ACTIVE_SPEEDUP = 5
#: Activity lasts this long after the last new event (at least; see `PollPace`).
ACTIVE_HOLD_S = 10.0
#: After a poke whose read found nothing, read again after these delays (seconds), until a
#: read finds something: 1.55 s in all, five reads at most per poke (see `PollPace.poked`).
POKE_FOLLOW_UPS_S = (0.05, 0.1, 0.2, 0.4, 0.8)


class PollPace:
    """The delay before the next poll, from what the last one found.

    Why not a fixed interval: an event waits U(0, interval) for the next poll, so with the
    default 1 s the median latency is above 0.5 s before the pipeline adds anything, and a
    shorter interval multiplies the source load while nothing happens (measured: p50 0.59 s
    at 1 s). Events come in bursts (a DAG run emits several, a backfill hundreds), so after a
    new event the poller polls `ACTIVE_SPEEDUP` times as often for ``max(ACTIVE_HOLD_S, 2 x
    pollInterval)``, then falls back to ``pollInterval``. Idle cost is unchanged (the issue
    holds it to 1 request/s); under load the median latency drops to about a fifth (measured
    p50 0.14 s against 0.59 s). A read cut at its size bound (``more``) re-polls at once.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.active_interval = min(interval, max(0.1, interval / ACTIVE_SPEEDUP))
        self.hold = max(ACTIVE_HOLD_S, 2 * interval)
        self._active_until = float("-inf")
        #: Re-reads still due after a poke that found nothing (see `poked`).
        self._follow_ups: list[float] = []

    def poked(self) -> None:
        """A poke woke the poller: if this read finds nothing, read again a few times soon.

        Why: Airflow calls its listeners *before* the transaction that holds the new event
        commits (2.11 `register_dataset_change`, 3.3 `register_asset_change` flush, notify,
        then the caller commits), so the read a poke causes at once can miss the event by a
        few milliseconds; the task's commit can take longer. Without follow-ups such a poke
        would be wasted and the event would wait the whole interval.
        """
        self._follow_ups = list(POKE_FOLLOW_UPS_S)

    def after(self, result: PollResult, now: float) -> float:
        if result.read:
            self._active_until = now + self.hold
            self._follow_ups = []
        if result.more:
            return 0.0
        delay = self.active_interval if now < self._active_until else self.interval
        if self._follow_ups:
            return min(delay, self._follow_ups.pop(0))
        return delay


def _invalid_key(exc: InvalidRow) -> InvalidKey:
    """A stable identity for an invalid row across polls, from the fields the client set.

    The event id when the row has a readable one; else where and what failed, without the
    row's index (it moves as new events arrive: 2.x walks from the newest). Never the
    message: `EventPage.invalid` holds only `InvalidRow`s, so no wording is compared.
    """
    if exc.event_id is not None:
        return ("id", exc.event_id)
    return ("problem", exc.problem)


def _invalid_position(exc: InvalidRow) -> tuple[datetime, int] | None:
    """Where the row sorts (its timestamp, then id), or None when that cannot be read."""
    if exc.timestamp is None or exc.timestamp.tzinfo is None:
        return None
    return (exc.timestamp, exc.event_id if exc.event_id is not None else -1)


@dataclass(frozen=True, kw_only=True)
class PollSettings:
    """What the poller takes from the sync's spec and the worker's options, as one value.

    Built from the spec by `from_spec`, so no call site copies fields one by one (the
    collaborators, the status and the clock stay separate arguments of `Poller`).
    """

    #: The sync's ``namespace/name``, carried in every envelope.
    sync: str
    #: The source's identity (``spec.source.identity``): every envelope's origin, and what
    #: the transport's published keys are asked for.
    origin: str
    #: Which events are forwarded (``spec.assets``).
    assets: AssetFilter
    #: ``spec.startFrom``: resolved once, into the first checkpoint.
    start_from: StartFrom
    #: ``spec.pollInterval`` in seconds: the pace while the source is quiet (`PollPace`).
    poll_interval_s: float
    #: How far behind the checkpoint each read looks again (`cursor.checkpoint`).
    overlap: timedelta = DEFAULT_OVERLAP
    #: Consecutive polls an invalid row holds the checkpoint before it is skipped.
    max_invalid_retries: int = 3
    #: Most envelopes per publish, each followed by a checkpoint; at most the replayers'
    #: ``commit_batch`` (`redelivery.check_publish_bound`, checked where both are known).
    max_publish: int = MAX_PUBLISH
    #: Back-off after a failed poll.
    error_backoff: BackoffPolicy = POLL_ERROR_BACKOFF
    #: The targets' identities (``targets[].identity``) and ``spec.maxHops``: which copies
    #: written by a sync go on (`forwarding.decide`). No targets: no copy goes on.
    targets: tuple[str, ...] = ()
    max_hops: int = DEFAULT_MAX_HOPS

    def __post_init__(self) -> None:
        if self.max_publish < 1:
            raise ValueError(f"max_publish must be at least 1, got {self.max_publish}")

    @classmethod
    def from_spec(
        cls,
        spec: SyncSpec,
        *,
        sync: str,
        overlap: timedelta = DEFAULT_OVERLAP,
        max_invalid_retries: int = 3,
        max_publish: int = MAX_PUBLISH,
    ) -> PollSettings:
        """The settings for `spec`; the rest come from the worker's options."""
        return cls(
            sync=sync,
            origin=spec.source.identity,
            assets=spec.assets,
            start_from=spec.start,
            poll_interval_s=spec.poll_interval_seconds,
            overlap=overlap,
            max_invalid_retries=max_invalid_retries,
            max_publish=max_publish,
            targets=tuple(t.identity for t in spec.targets),
            max_hops=spec.max_hops,
        )


class Poller:
    """Moves source events into the transport for one sync."""

    def __init__(
        self,
        *,
        settings: PollSettings,
        cursor: Cursor,
        publisher: Publisher,
        store: OffsetStore,
        status: SourceStatus,
        clock: Clock,
        metrics: WorkerMetrics,
        health: Health | None = None,
        wake: asyncio.Event | None = None,
        gate: asyncio.Lock | None = None,
    ) -> None:
        self._settings = settings
        #: Held from a publish to its checkpoint; shared with the completions poller
        #: (`runs.poller`), so the worker never holds two publishes not yet checkpointed.
        self._gate = gate if gate is not None else asyncio.Lock()
        self._cursor = cursor
        self._publisher = publisher
        self._store = store
        self.status = status
        self._filter = EventFilter(settings.assets)
        self._clock = clock
        self._metrics = metrics
        self._health = health
        #: Set by accepted pokes (`poke.Wakeup`): cut the sleep short and read now.
        self._wake = wake
        self._published_keys: set[int] | None = None
        self._strikes: dict[InvalidKey, int] = {}
        self._skipped_invalid: OrderedDict[InvalidKey, None] = OrderedDict()
        self._redacted_assets: OrderedDict[str, None] = OrderedDict()
        #: The checkpoint time last checked for a purge (each is checked once).
        self._gap_checked: datetime | None = None
        self._log_extra = {"sync": settings.sync, "origin": settings.origin}
        self._failures = FailureReport(status, side="Source", clock=clock)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. An iteration under way (publish, checkpoint) completes.

        The pace is adaptive (see `PollPace`): at once while a read hit its size bound,
        ``pollInterval / ACTIVE_SPEEDUP`` while events keep coming, ``pollInterval`` when the
        source is quiet. A poke (`wake`) ends the sleep early; pokes that arrive while a read
        is under way cause one read after it, however many they are: the wake is cleared
        just before each read, and everything new is read at once anyway.
        """
        backoff = self._settings.error_backoff.start()
        pace = PollPace(self._settings.poll_interval_s)
        while not stop.is_set():
            if self._wake is not None:
                self._wake.clear()
            failed = True
            try:
                result = await self.poll_once()
            except Exception as exc:
                kind = type(exc).__name__
                self.status.last_error = f"{kind}: {exc}"
                self._failures.failed(exc)
                self._metrics.poll_errors.labels(kind=kind).inc()
                delay = backoff.next()
                log.warning(
                    "poll failed; retrying",
                    extra={**self._log_extra, "error": self.status.last_error, "delay_s": delay},
                )
            else:
                failed = False
                backoff.reset()
                self._failures.succeeded()
                delay = pace.after(result, self._clock.monotonic())
            if self._wake is None or failed:
                # A back-off is not cut short by pokes: a failing source is not read faster
                # because events are being made (a poke meanwhile still counts after it).
                if await sleep_or_stop(self._clock, stop, delay):
                    break
                continue
            woken = await sleep_or_wake(self._clock, stop, self._wake, delay)
            if stop.is_set():
                break
            if woken:
                self._metrics.poke_polls.inc()
                pace.poked()

    async def _initialize(self) -> None:
        if self._published_keys is None:
            keys = await self._publisher.published_keys(self._settings.origin)
            # Negative ids are completions (`runs.ids`), the completions poller's to skip.
            self._published_keys = {k for k in keys if k >= 0}
            if self._published_keys:
                log.info(
                    "transport already holds events of this origin; they will not be re-sent",
                    extra={**self._log_extra, "count": len(self._published_keys)},
                )
        if not self.status.checkpoint.initialized:
            self.status.checkpoint = await resolve_start(
                self._cursor, self._settings.start_from, overlap=self._settings.overlap
            )
            await self._store.save_source(self.status)
            log.info(
                "start position resolved",
                extra={
                    **self._log_extra,
                    "start_from": str(self._settings.start_from),
                    "checkpoint": _describe(self.status.checkpoint.timestamp),
                },
            )

    async def poll_once(self) -> PollResult:
        await self._initialize()
        assert self._published_keys is not None
        previous = self.status.checkpoint
        batch = await self._cursor.read(previous)
        await self._check_gap(previous, batch)
        candidates = self._deliverable(batch)

        published = looped = filtered = already = forwarded = 0
        chunk: list[Envelope] = []
        counts = {"filtered": 0, "path": 0, "hop_limit": 0, "forwarded": 0, "already": 0}
        start = 0  # first candidate not yet counted and checkpointed
        for index, event in enumerate(candidates):
            decision: Decision = "native"
            if event.id in self._published_keys:
                counts["already"] += 1
            elif (decision := self._forwarding(event)) in ("path", "hop_limit"):
                counts[decision] += 1
            elif (reason := self._filter.rejection(event)) is not None:
                counts["filtered"] += 1
                log.debug(
                    "event filtered",
                    extra={**self._log_extra, "event_id": event.id, "reason": reason},
                )
            else:
                if decision == "forwarded":
                    counts["forwarded"] += 1
                chunk.append(
                    Envelope(sync=self._settings.sync, origin=self._settings.origin, event=event)
                )
            if len(chunk) < self._settings.max_publish and index < len(candidates) - 1:
                continue
            async with self._gate:  # publish to checkpoint: one unsaved publish per worker
                if chunk:
                    await self._publisher.publish(chunk)
                # Published: only now may the checkpoint move past these events.
                handled = candidates[start : index + 1]
                self._count(handled, chunk, **counts)
                published += len(chunk)
                filtered += counts["filtered"]
                looped += counts["path"] + counts["hop_limit"]
                forwarded += counts["forwarded"]
                already += counts["already"]
                await self._advance(
                    next_checkpoint(
                        previous,
                        batch=batch,
                        handled=candidates[: index + 1],
                        overlap=self._settings.overlap,
                    )
                )
            chunk = []
            counts = dict.fromkeys(counts, 0)
            start = index + 1
        if not candidates:
            # Nothing to hand on, but the read may still settle part of the window.
            await self._advance(
                next_checkpoint(previous, batch=batch, handled=[], overlap=self._settings.overlap)
            )
        now = self._clock.now()
        self.status.last_poll_time = now
        self.status.last_error = None
        self._metrics.last_successful_poll.set(now.timestamp())
        if self._health is not None:
            self._health.poll_succeeded()
        held = len(batch.events) - len(candidates)
        return PollResult(
            read=len(batch.events),
            published=published,
            filtered=filtered,
            looped=looped,
            already_published=already,
            held=held,
            more=batch.more and held == 0,
            forwarded=forwarded,
        )

    def _forwarding(self, event: SourceEvent) -> Decision:
        """What becomes of `event` if it is a copy written by a sync (`forwarding`)."""
        return decide_event(
            event,
            source=self._settings.origin,
            targets=self._settings.targets,
            max_hops=self._settings.max_hops,
        )

    async def _check_gap(self, previous: Checkpoint, batch: Batch) -> None:
        """Report a purge of the source's history past the checkpoint (`SourceGap`).

        Every read re-reads the events at the checkpoint (they are in ``seen_ids``, and the
        read starts at or before their time); a read that meets none of them means they
        were deleted. Only then (so no request is added to a normal poll, and once per
        checkpoint) the oldest event is asked for: newer than the checkpoint means the
        history was cut by age beyond what had been read, which is what ``airflow db
        clean`` does, and events written in between may be lost. An older one means single
        events were deleted, which is no gap in what was read. Reported, never fatal: the
        checkpoint stays and what remains is delivered.
        """
        if previous.timestamp is None or not previous.seen_ids or batch.reread or batch.invalid:
            return
        gap = self.status.last_gap
        if self._gap_checked == previous.timestamp or (gap and gap.after == previous.timestamp):
            return  # checked already (by this process, or reported before a restart)
        self._gap_checked = previous.timestamp
        oldest = await self._cursor.oldest()
        if oldest is not None and oldest.timestamp <= previous.timestamp:
            return
        now = self._clock.now()
        after = previous.timestamp
        if oldest is None:
            found = "the source holds no events any more"
        else:
            found = f"the source's oldest event is from {oldest.timestamp.isoformat()}"
        message = (
            f"{found}, after the checkpoint {after.isoformat()}: its history was purged"
            " (airflow db clean?) past what the sync had read; events written after the"
            " checkpoint and purged before this read were never synced"
        )
        self.status.gaps += 1
        self.status.last_gap = SourceGap(
            detected_at=now,
            after=after,
            oldest_event_time=oldest.timestamp if oldest is not None else None,
            message=message,
        )
        self._metrics.source_gaps.inc()
        await self._store.save_source(self.status)
        log.warning(
            "source events were purged before they were read",
            extra={
                **self._log_extra,
                "checkpoint": after.isoformat(),
                "oldest_event_time": oldest.timestamp.isoformat() if oldest else None,
            },
        )

    def _note_masked(self, envelopes: Sequence[Envelope]) -> None:
        """Count events whose extra Airflow masked (`api.redaction`); warn once per asset.

        The values are copied as the source answered (``"***"``): the real ones never left
        the source. The warning names the keys, never a value.
        """
        redacted = 0
        for envelope in envelopes:
            keys = masked_keys(envelope.event.extra)
            if not keys:
                continue
            redacted += 1
            uri = envelope.event.uri
            if uri in self._redacted_assets:
                continue
            self._redacted_assets[uri] = None
            while len(self._redacted_assets) > _REDACTED_MEMORY:
                self._redacted_assets.popitem(last=False)
            log.warning(
                "the source masked values of this asset's event extra (Airflow's secrets"
                " masker); they are copied as '***'",
                extra={
                    **self._log_extra,
                    "asset": uri,
                    "event_id": envelope.event.id,
                    "keys": keys,
                },
            )
        if redacted:
            self.status.events_redacted += redacted
            self._metrics.events_redacted.inc(redacted)

    async def _advance(self, checkpoint: Checkpoint) -> None:
        """Save `checkpoint` if it differs from the one saved last."""
        if checkpoint != self.status.checkpoint:
            self.status.checkpoint = checkpoint
            await self._store.save_source(self.status)

    def _count(
        self,
        handled: Sequence[SourceEvent],
        envelopes: Sequence[Envelope],
        *,
        filtered: int,
        path: int,
        hop_limit: int,
        forwarded: int,
        already: int,
    ) -> None:
        looped = path + hop_limit
        self._metrics.events_polled.inc(len(handled))
        self._metrics.events_published.inc(len(envelopes))
        self._metrics.events_filtered.labels(reason="filter").inc(filtered)
        self._metrics.events_filtered.labels(reason="synced").inc(looped)
        self._metrics.copies_forwarding.labels(decision="forwarded").inc(forwarded)
        self._metrics.copies_forwarding.labels(decision="path").inc(path)
        self._metrics.copies_forwarding.labels(decision="hop_limit").inc(hop_limit)
        self._metrics.events_filtered.labels(reason="already_published").inc(already)
        self._note_masked(envelopes)
        self.status.events_published += len(envelopes)
        self.status.events_filtered += filtered
        if handled:
            newest = max(e.timestamp for e in handled)
            last = self.status.last_event_time
            self.status.last_event_time = newest if last is None else max(last, newest)
        if envelopes:
            log.info(
                "published",
                extra={
                    **self._log_extra,
                    "count": len(envelopes),
                    "first_event_id": envelopes[0].event.id,
                    "last_event_id": envelopes[-1].event.id,
                },
            )
        if looped:
            log.debug(
                "copies written by a sync not forwarded",
                extra={**self._log_extra, "on_path": path, "hop_limit": hop_limit},
            )

    def _deliverable(self, batch: Batch) -> list[SourceEvent]:
        """The prefix of the batch that may be handled now, given its invalid rows."""
        hold_all = False
        barrier: tuple[datetime, int] | None = None
        strikes: dict[InvalidKey, int] = {}
        for exc in batch.invalid:
            key = _invalid_key(exc)
            if key in self._skipped_invalid or key in strikes:
                continue
            strikes[key] = self._strikes.get(key, 0) + 1
            event_id = key[1] if key[0] == "id" else None
            if strikes[key] > self._settings.max_invalid_retries:
                del strikes[key]
                self._skip_invalid(key, exc, event_id)
                continue
            log.warning(
                "source returned an invalid event; holding the checkpoint below it",
                extra={
                    **self._log_extra,
                    "event_id": event_id,
                    "attempt": strikes[key],
                    "error": str(exc),
                },
            )
            position = _invalid_position(exc)
            if position is None:
                hold_all = True
            elif barrier is None or position < barrier:
                barrier = position
        # Only consecutive failures count: a row that went away (fixed, or a transient bad
        # response) starts from zero if it ever comes back.
        self._strikes = strikes
        if hold_all:
            return []
        if barrier is None:
            return list(batch.events)
        return [e for e in batch.events if e.sort_key < barrier]

    def _skip_invalid(self, key: InvalidKey, exc: InvalidRow, event_id: object) -> None:
        self._skipped_invalid[key] = None
        while len(self._skipped_invalid) > _SKIPPED_MEMORY:
            self._skipped_invalid.popitem(last=False)
        self.status.events_invalid += 1
        self._metrics.events_invalid.inc()
        log.error(
            "skipping a source event that keeps failing validation",
            extra={
                **self._log_extra,
                "event_id": event_id,
                "attempts": self._settings.max_invalid_retries,
                "error": str(exc),
            },
        )


def _describe(ts: datetime | None) -> str:
    return ts.isoformat() if ts is not None else "beginning of history"
