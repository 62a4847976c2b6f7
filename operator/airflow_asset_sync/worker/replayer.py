"""The replayer: write deliveries into one target Airflow, then commit.

One replayer per target, each on its own subscription, so a slow or down target never holds
back another (with Kafka; see `channel` for the in-process case).

A batch (at most `commit_batch` deliveries, so never more than that uncommitted):

- is grouped by target asset URI (after ``Target.map_uri``). Groups run concurrently, at most
  `concurrency` POSTs in flight; within a group events go one by one, in order, so the target
  sees one asset's events in source order (the Kafka key is the asset URI for the same reason);
- is committed only after every delivery in it was acknowledged by the target (or skipped /
  deduplicated on purpose). A delivery that cannot be written yet blocks the commit, and so
  this target, until it can: that is the at-least-once promise.

Outcomes per delivery:

- written: ``extra`` = source extra + our marker (`Envelope.target_extra`), counted replayed;
- not ours (``envelope is None``: not JSON, unknown schema): counted skipped, committed;
- asset unknown to the target (404): policy ``retry`` *parks* the event (see `parking`):
  it is saved in the target's status, then committed, and every other asset keeps flowing;
  later events of that asset are parked behind it, so each asset stays in order. A
  background task probes each parked asset with back-off (one request per asset, not per
  event) and, once the asset exists, writes its parked events in order, exactly once (the
  target is checked for markers first after a restart). The URI is listed in
  ``unknownAssets`` meanwhile. Policy ``skip`` counts the event skipped and commits;
- unavailable (5xx, timeouts, connection errors): back off and retry, never commit;
- authentication failed: back off and retry (a person must fix the Secret; events wait);
- rejected (other 4xx): retried a few times, then counted failed, logged and committed, since
  a request the server keeps rejecting would otherwise stop this target for good.

Exactly-once in the target, on top of at-least-once delivery:

- An in-memory LRU of recently written ``(origin, event id)`` keys drops duplicates that the
  transport hands over twice.
- After a restart, deliveries that were written but not committed before the crash come
  again. The first `commit_batch` deliveries after start are therefore *suspect*: before
  writing one, the replayer lists the target's newest events of that asset and skips the
  delivery if one carries a marker with the same ``(origin, event id)``. One listing per asset
  is cached for the suspect window, so a restart costs one GET per asset, not per event.
- A write that failed ambiguously (timeout, garbled answer) may have landed; the next attempt
  checks the target the same way (uncached) before writing again.
- A replayed delivery (``spec.replay``, flagged on its envelope) is checked against every
  copy of its asset in the target since the replay's start, however old (`replay_dedup`).
- A forwarded delivery (a copy of a copy: chains, hubs) is skipped, committed, if this target
  is on its path (`forwarding.on_path`: the target had the event already), and otherwise
  checked against the target before every write, since another path may have brought the
  same origin event (the rule is in `copies`).

Delivery modes (``targets[].delivery``):

- ``eachEvent`` (default): every event is written as it comes; Airflow may fold a burst into
  one consumer run.
- ``oneRunPerEvent``: before writing, the target's queued events of the asset are read; while
  a consumer DAG still has one queued (no run created for it yet), the event is *held*: parked
  like an unknown asset's events (reason ``awaitingConsumer``, saved in status, committed),
  so other assets keep flowing, and the background task writes the held events one at a time,
  each once the previous one has left the queue. The check is made against the target every
  time, never remembered, so it holds across restarts. A paused consumer is never queued, so
  it holds nothing back (and gets no runs).
- ``coalesce``: after the first delivery of a batch, more are gathered until ``window`` has
  passed (or ``commit_batch`` is reached); the deliveries of one asset in the batch are then
  written as one target event: the newest event's ``extra``, with a marker that lists every
  source event id (``coalesced``), which dedup, replay dedup and verify all read.

One writer per sync (in a cluster, `lease`): with a `fence`, every write waits until the
worker holds its sync's Lease. If the lease was lost and then taken back after another
holder had it, that holder may have written what is pending here, so the next `commit_batch`
deliveries are checked against the target again, as after a restart.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from airflow_asset_sync.api.events import Envelope, Marker
from airflow_asset_sync.api.spec import DeliveryMode, Target, UnknownAssetPolicy
from airflow_asset_sync.api.status import MAX_UNKNOWN_ASSETS, ParkReason, TargetStatus
from airflow_asset_sync.api.transport import Delivery, Subscription
from airflow_asset_sync.clients.airflow.base import (
    AirflowClient,
    AssetNotFound,
    AuthFailed,
    BadRequest,
    EventQuery,
)
from airflow_asset_sync.worker.backoff import Backoff, BackoffPolicy
from airflow_asset_sync.worker.clock import Clock, sleep_or_stop
from airflow_asset_sync.worker.copies import TargetCopies
from airflow_asset_sync.worker.failures import FailureReport
from airflow_asset_sync.worker.forwarding import on_path
from airflow_asset_sync.worker.lease import WriteFence
from airflow_asset_sync.worker.metrics import AssetLag, WorkerMetrics
from airflow_asset_sync.worker.parking import ParkingLimits, ParkingLot, to_envelope
from airflow_asset_sync.worker.redelivery import COMMIT_BATCH
from airflow_asset_sync.worker.replay_dedup import ReplayMarkers

log = logging.getLogger(__name__)

#: (origin, source event id, sync): see `Marker.key`.
Key = tuple[str, int, str]
#: How the target is asked: ``cached`` (the suspect window's listing), ``batch`` (one listing
#: per asset per batch: forwarded deliveries), ``fresh`` (a new listing).
Check = Literal["cached", "batch", "fresh"] | None
#: Saves the target's status durably (`OffsetStore.save_target`).
SaveTarget = Callable[[TargetStatus], Awaitable[None]]


class Outcome(enum.Enum):
    DONE = "done"  # written, deduplicated, skipped or given up: committable
    UNKNOWN = "unknown"  # the target does not know the asset (policy retry): park it
    WAIT = "wait"  # oneRunPerEvent: a consumer still has the previous event queued: hold it
    STOPPED = "stopped"  # stopped before it was done


TRANSIENT_BACKOFF = BackoffPolicy(initial=0.5, maximum=30.0)
UNKNOWN_ASSET_BACKOFF = BackoffPolicy(initial=2.0, maximum=60.0)
COMMIT_ATTEMPTS = 3


@dataclass(frozen=True)
class ReplayerOptions:
    #: Largest batch fetched, and so the most deliveries ever uncommitted; also the suspect
    #: window after a start, which every publish must fit (`redelivery`).
    commit_batch: int = COMMIT_BATCH
    #: POSTs in flight to this target. One: Airflow 3.3.2 on SQLite does 30-70 POSTs/s one
    #: at a time, but with 2 in flight its writers wait on each other's database lock until
    #: SQLite's 5 s busy timeout and about a quarter answer HTTP 500 (measured by the
    #: reliability suite: 0.6 writes/s), which after a target outage means a backlog that
    #: never drains. One in flight is far above the asset-event rates this tool is for, on
    #: any database; raise it only for a target known to write concurrently (PostgreSQL).
    concurrency: int = 1
    #: How long one fetch waits for deliveries.
    fetch_timeout: float = 1.0
    #: Back-off for unavailable / auth failures / ambiguous errors.
    backoff: BackoffPolicy = TRANSIENT_BACKOFF
    #: Attempts before a rejected (4xx) event is given up.
    max_rejections: int = 3
    #: Recently written keys remembered for dedup.
    recent_keys: int = 10_000
    #: Pages of the target's newest events of an asset read to look for a marker.
    dedup_pages: int = 2
    #: Limits on parked events (unknown assets, policy retry).
    parking: ParkingLimits = field(default_factory=ParkingLimits)
    #: Back-off between probes of one parked asset (does the target know it yet?).
    park_probe_backoff: BackoffPolicy = UNKNOWN_ASSET_BACKOFF
    #: Seconds between looks at the parked events (due probes, expiry, gauges).
    tend_interval: float = 1.0
    #: Seconds between looks at the queued events of an asset whose events wait for a
    #: consumer (``oneRunPerEvent``): about one scheduler loop.
    consume_probe_interval: float = 1.0


class Replayer:
    """Writes one target's deliveries."""

    def __init__(
        self,
        *,
        target: Target,
        client: AirflowClient,
        subscription: Subscription,
        status: TargetStatus,
        clock: Clock,
        metrics: WorkerMetrics,
        options: ReplayerOptions = ReplayerOptions(),
        fence: WriteFence | None = None,
        save: SaveTarget | None = None,
    ) -> None:
        self._target = target
        self._client = client
        self._subscription = subscription
        self.status = status
        self._clock = clock
        self._metrics = metrics
        self._options = options
        self._recent: OrderedDict[Key, None] = OrderedDict()
        self._suspect_left = options.commit_batch
        self._suspect_cache: dict[str, TargetCopies] = {}
        #: Listings for forwarded deliveries, per asset, for the batch under way.
        self._batch_cache: dict[str, TargetCopies] = {}
        self._identity = target.identity
        #: Copies by marker for replayed deliveries (`spec.replay`): see `replay_dedup`.
        self._replays = ReplayMarkers(client, clock=clock, target=target.name)
        self._semaphore = asyncio.Semaphore(options.concurrency)
        self._mode = target.delivery.mode
        self._log_extra = {"target": target.name}
        self._failures = FailureReport(status, side="Target", clock=clock)
        self._fence = fence
        self._fence_generation = fence.generation if fence is not None else 0
        #: Deliveries still to check against the target after the lease changed hands.
        self._recheck_left = 0
        #: Parked events live in ``status.parked``; `save` makes them durable. None (tests
        #: only): parked events are kept in memory.
        self._save = save
        self._lot = ParkingLot(status, options.parking)
        #: Parked assets whose events may already be in the target (loaded after a restart,
        #: or the lease changed hands): their markers are listed before the first write.
        self._lot_suspect: set[str] = {a.uri for a in self._lot.assets}
        self._probe_at: dict[str, float] = {}
        self._probe_backoff: dict[str, Backoff] = {}
        self._lot_dirty = False
        self._lot_changed = asyncio.Event()
        #: Source times of the current batch's deliveries not done yet (for the lag).
        self._pending: dict[Key, datetime] = {}
        self._asset_lag = AssetLag(metrics, target=target.name)
        for asset in self._lot.assets:
            self._schedule_probe(asset.uri, now=True)
        self._set_gauges()

    @property
    def parking(self) -> ParkingLot:
        return self._lot

    # -- main loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Replay until `stop` is set; writes in flight finish and what is done is committed.

        A failing fetch (broker unreachable) is retried with back-off rather than ending the
        replayer: nothing is lost while waiting, and the error shows in status and metrics.
        """
        tender = asyncio.create_task(self._tend_loop(stop), name="parked")
        try:
            await self._replay_loop(stop)
        finally:
            if not stop.is_set():
                tender.cancel()
            await asyncio.gather(tender, return_exceptions=True)

    async def _replay_loop(self, stop: asyncio.Event) -> None:
        backoff = self._options.backoff.start()
        while not stop.is_set():
            try:
                deliveries = await self._fetch_or_stop(stop)
            except Exception as exc:
                self._error("fetch", exc, message="fetch from the transport failed; retrying")
                if await sleep_or_stop(self._clock, stop, backoff.next()):
                    break
                continue
            backoff.reset()
            self._failures.succeeded(component="Kafka")
            if deliveries is None:
                break
            if deliveries:
                if self._mode is DeliveryMode.COALESCE:
                    deliveries = await self._gather(deliveries, stop)
                await self.replay(deliveries, stop)
            else:
                self._idle()

    async def _gather(self, first: list[Delivery], stop: asyncio.Event) -> list[Delivery]:
        """``coalesce``: fetch on until the window since `first` has passed, or a full batch.

        Nothing is committed meanwhile, and never more than `commit_batch` deliveries are
        held, so a crash loses nothing and the restart dedup still covers what was held. A
        stop ends the gathering early; what was gathered is written as usual.
        """
        batch = list(first)
        deadline = self._clock.monotonic() + self._target.delivery.window_seconds
        while len(batch) < self._options.commit_batch and not stop.is_set():
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                break
            try:
                more = await self._fetch_or_stop(
                    stop,
                    limit=self._options.commit_batch - len(batch),
                    wait_s=min(remaining, self._options.fetch_timeout),
                )
            except Exception as exc:
                self._error("fetch", exc, message="fetch from the transport failed")
                break  # write what was gathered; the loop retries fetching
            if more is None:
                break
            batch.extend(more)
            remaining = deadline - self._clock.monotonic()
            # An empty fetch may return at once (a closed channel): pace the loop.
            if not more and remaining > 0:
                await sleep_or_stop(self._clock, stop, min(remaining, 0.05))
        return batch

    async def _fetch_or_stop(
        self, stop: asyncio.Event, *, limit: int | None = None, wait_s: float | None = None
    ) -> list[Delivery] | None:
        """Fetch, abandoning the wait when asked to stop.

        Abandoning a fetch is safe: nothing fetched is committed, so a restart gets it again.
        """
        fetch = asyncio.ensure_future(
            self._subscription.fetch(
                limit if limit is not None else self._options.commit_batch,
                wait_s if wait_s is not None else self._options.fetch_timeout,
            )
        )
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            fetch.cancel()  # `asyncio.wait` does not cancel what it waits on
            raise
        finally:
            stopper.cancel()
        if not fetch.done():
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            return None
        return fetch.result()

    async def replay(self, deliveries: Sequence[Delivery], stop: asyncio.Event) -> list[Delivery]:
        """Write one batch and commit what is done; returns the committed deliveries.

        Everything is done unless `stop` interrupted a back-off; then only a per-partition
        prefix of done deliveries is committed, so nothing undone is ever committed past.
        """
        suspect = self._take_suspects(deliveries)
        done: set[int] = set()
        parked: set[int] = set()
        groups: dict[str, list[int]] = {}
        self._pending = {}
        self._batch_cache = {}
        for index, delivery in enumerate(deliveries):
            if delivery.envelope is None:
                self._foreign(delivery)
                done.add(index)
            elif on_path(delivery.envelope.marker(), self._identity):
                self._on_path(delivery.envelope)
                done.add(index)
            else:
                uri = self._target.map_uri(delivery.envelope.event.uri)
                groups.setdefault(uri, []).append(index)
                self._pending.setdefault(
                    delivery.envelope.marker().key, delivery.envelope.event.timestamp
                )
                self._asset_lag.pending(delivery.envelope, uri)

        async def run_group(uri: str, indexes: list[int]) -> None:
            for index in indexes:
                envelope = deliveries[index].envelope
                assert envelope is not None
                if self._lot.is_parked(uri):
                    # Behind this asset's parked events, to keep its order.
                    outcome = Outcome.UNKNOWN
                else:
                    outcome = await self._deliver(envelope, uri, index in suspect, stop)
                if outcome is Outcome.STOPPED:
                    return
                if outcome in (Outcome.UNKNOWN, Outcome.WAIT):
                    reason: ParkReason = (
                        "awaitingConsumer" if outcome is Outcome.WAIT else "unknownAsset"
                    )
                    if not await self._park(envelope, uri, stop, reason=reason):
                        return
                    parked.add(index)
                    continue
                done.add(index)

        async def run_coalesced(uri: str, indexes: list[int]) -> None:
            """One write per run of the asset's deliveries of one origin (``coalesce``).

            A coalesced target event has one marker and so one origin: forwarded copies of
            another instance's events are coalesced among themselves, in order.
            """
            runs: list[list[int]] = []
            for index in indexes:
                envelope = deliveries[index].envelope
                assert envelope is not None
                origin = envelope.marker().origin
                previous = deliveries[runs[-1][-1]].envelope if runs else None
                if previous is not None and previous.marker().origin == origin:
                    runs[-1].append(index)
                else:
                    runs.append([index])
            for run in runs:
                if not await run_one_write(uri, run):
                    return

        async def run_one_write(uri: str, indexes: list[int]) -> bool:
            """One target event for `indexes`; False if the asset's later runs must wait."""
            envelopes = [deliveries[i].envelope for i in indexes]
            members = [e for e in envelopes if e is not None]
            if self._lot.is_parked(uri):
                outcome = Outcome.UNKNOWN
            else:
                check = any(i in suspect for i in indexes)
                outcome = await self._deliver(
                    members[-1], uri, check, stop, coalesced=tuple(members[:-1])
                )
            if outcome is Outcome.STOPPED:
                return False
            if outcome is Outcome.UNKNOWN:
                # Parked one by one, in order; written one by one once the asset exists.
                for index, envelope in zip(indexes, members, strict=True):
                    if not await self._park(envelope, uri, stop):
                        return False
                    parked.add(index)
                return True  # later runs see the asset parked and park behind it
            done.update(indexes)
            return True

        runner = run_coalesced if self._mode is DeliveryMode.COALESCE else run_group
        await asyncio.gather(*(runner(uri, idx) for uri, idx in groups.items()))
        self._pending = {}
        if self._suspect_left <= 0:
            self._suspect_cache.clear()
        # A parked delivery is done once it is stored: only then may it be committed.
        if parked and await self._persist(stop):
            done |= parked
        committable = _committable(deliveries, done)
        if committable and not await self._commit(committable, stop):
            return []
        return committable

    async def _commit(self, deliveries: Sequence[Delivery], stop: asyncio.Event) -> bool:
        """Commit, retrying a few times.

        Retried rather than skipped because fetching on after a failed commit lets the
        uncommitted tail grow past `commit_batch`, beyond what the restart dedup checks. After
        the last attempt (e.g. the partition moved to another consumer) the replayer goes on:
        the deliveries come again and the recent-keys LRU absorbs them.
        """
        backoff = self._options.backoff.start()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                await self._subscription.commit(deliveries)
                return True
            except Exception as exc:
                self._error("commit", exc, message="commit failed")
                if attempt == COMMIT_ATTEMPTS or await sleep_or_stop(
                    self._clock, stop, backoff.next()
                ):
                    return False
        return False

    def _take_suspects(self, deliveries: Sequence[Delivery]) -> set[int]:
        suspect: set[int] = set()
        for index, delivery in enumerate(deliveries):
            if self._suspect_left <= 0:
                break
            if delivery.envelope is not None:
                suspect.add(index)
            self._suspect_left -= 1
        return suspect

    # -- one delivery -----------------------------------------------------------------------

    async def _deliver(
        self,
        envelope: Envelope,
        uri: str,
        suspect: bool,
        stop: asyncio.Event,
        *,
        parked: bool = False,
        coalesced: tuple[Envelope, ...] = (),
    ) -> Outcome:
        """Write one event (or decide not to).

        `parked`: a parked event being drained (not counted in the lag of pending work).
        `coalesced`: older events of the asset written in the same target event as this one
        (``coalesce``); each is checked for an earlier copy on its own, and the write lists
        the ids of those left.
        """
        lag = not parked
        members: list[Envelope] = []
        for member in (*coalesced, envelope):
            member_key = member.marker().key
            if member_key in self._recent:
                self._recent.move_to_end(member_key)
                self._deduplicated(member, uri, "recently written", lag=lag)
            else:
                members.append(member)
        if not members:
            return Outcome.DONE
        envelope = members[-1]
        check: Check = "cached" if suspect else None
        if self._recheck_left > 0:
            self._recheck_left -= 1
            check = check or "cached"
        if check is None and any(m.marker().forwarded for m in members):
            # Another path may have brought the same origin event (`copies`).
            check = "fresh" if parked else "batch"
        backoff = self._options.backoff.start()
        rejections = 0
        while True:
            if self._fence is not None:
                generation = await self._fence.wait_held(stop)
                if generation is None:
                    return Outcome.STOPPED
                if generation != self._fence_generation:
                    self._lease_changed_hands(generation)
                    check = "fresh"
            try:
                async with self._semaphore:
                    kept = []
                    for member in members:
                        if await self._replays.holds(member, uri):
                            self._deduplicated(member, uri, "replay: already in target", lag=lag)
                        else:
                            kept.append(member)
                    members = kept
                    if check is not None and members:
                        copies = await self._target_keys(uri, check)
                        kept = []
                        for member in members:
                            held = copies.holds(member.marker())
                            if held is None:
                                kept.append(member)
                            elif held == "own":
                                self._deduplicated(member, uri, "already in target", lag=lag)
                            else:
                                self._other_path(member, uri, lag=lag)
                        members = kept
                        check = None
                    if not members:
                        return Outcome.DONE
                    envelope = members[-1]
                    if (
                        self._mode is DeliveryMode.ONE_RUN_PER_EVENT
                        and await self._client.queued_consumers(uri) > 0
                    ):
                        return Outcome.WAIT
                    # Origin ids: a forwarded member stands for its origin's event(s).
                    ids = (
                        tuple(i for m in members for i in m.marker().event_ids)
                        if len(members) > 1
                        else ()
                    )
                    await self._client.post_event(
                        uri,
                        envelope.target_extra(coalesced=ids),
                        partition_key=envelope.event.partition_key,
                    )
            except AssetNotFound:
                self._unknown_asset(uri, add=True)
                if self._target.on_unknown_asset == UnknownAssetPolicy.SKIP:
                    for member in members:
                        self._skipped(member, "unknown_asset", lag=lag)
                    return Outcome.DONE
                self._metrics.unknown_asset_retries.labels(target=self._target.name).inc()
                return Outcome.UNKNOWN
            except BadRequest as exc:
                rejections += 1
                # One event refused is that event's problem (eventsFailed), not the target's.
                self._error("rejected", exc, uri=uri, report=False)
                if rejections >= self._options.max_rejections:
                    for member in members:
                        self._failed(member, uri, exc, lag=lag)
                    return Outcome.DONE
                delay = backoff.next()
            except AuthFailed as exc:
                self._error("auth", exc, uri=uri)
                delay = backoff.next()
            except Exception as exc:
                # Unavailable, BadResponse, or anything unexpected: the write may have landed.
                self._error(type(exc).__name__, exc, uri=uri)
                check = check or "fresh"
                delay = backoff.next()
            else:
                for member in members:
                    self._written(member, uri, member.marker().key, lag=lag)
                if len(members) > 1:
                    self.status.events_coalesced += len(members) - 1
                    self._metrics.events_coalesced.labels(target=self._target.name).inc(
                        len(members) - 1
                    )
                return Outcome.DONE
            self._refresh_lag()
            if await sleep_or_stop(self._clock, stop, delay):
                return Outcome.STOPPED

    def _lease_changed_hands(self, generation: int) -> None:
        self._fence_generation = generation
        self._suspect_cache.clear()
        self._replays.clear()
        self._recheck_left = self._options.commit_batch
        self._lot_suspect = {a.uri for a in self._lot.assets}
        log.info(
            "lease taken back after another holder had it; checking the target again",
            extra={**self._log_extra, "deliveries": self._recheck_left},
        )

    async def _target_keys(self, uri: str, check: Check) -> TargetCopies:
        """The target's copies of the asset: cached for the suspect window (``cached``) or
        the batch (``batch``), or listed anew (``fresh``)."""
        cache = {"cached": self._suspect_cache, "batch": self._batch_cache}.get(check or "")
        if cache is not None and uri in cache:
            return cache[uri]
        keys = await self._marker_keys(uri)
        if cache is not None:
            cache[uri] = keys
        return keys

    async def _marker_keys(self, uri: str) -> TargetCopies:
        """Marker keys on the target's newest events of this asset."""
        keys = TargetCopies()
        limit = self._client.page_limit
        for page_no in range(self._options.dedup_pages):
            try:
                page = await self._client.list_events(
                    EventQuery(limit=limit, offset=page_no * limit, ascending=False, asset_uri=uri)
                )
            except AssetNotFound:
                return keys
            except BadRequest as exc:
                # The target cannot answer this query; writing without the check risks a
                # duplicate, which beats never writing.
                log.warning(
                    "cannot list target events to look for an earlier write",
                    extra={**self._log_extra, "asset_uri": uri, "error": str(exc)},
                )
                return keys
            for event in page.events:
                marker = Marker.from_extra(event.extra)
                if marker is not None:
                    keys.add(marker)  # every id of a coalesced event
            if len(page.events) + len(page.invalid) < limit:
                break
        return keys

    # -- parked events (unknown assets) ------------------------------------------------------

    async def _park(
        self,
        envelope: Envelope,
        uri: str,
        stop: asyncio.Event,
        *,
        reason: ParkReason = "unknownAsset",
    ) -> bool:
        """Park one delivery behind its asset's queue; False if stopped while parking is full.

        `reason` ``awaitingConsumer``: held for ``oneRunPerEvent`` (no unknown asset listed).

        Past the limits nothing is dropped: this waits (back-pressure on this target, as
        before parking existed) until probes or expiry make room.
        """
        key = envelope.marker().key
        self._pending.pop(key, None)
        if self._lot.holds(key):
            return True  # delivered again (a restart) while still parked
        backoff: Backoff | None = None
        while (full := self._lot.full()) is not None:
            # Set on every round: a write of another asset in the batch clears it.
            self.status.last_error = f"parking full, this target waits: {full}"
            if backoff is None:
                backoff = self._options.backoff.start()
                log.warning(
                    "parked events at their limit; holding this target's stream until "
                    "room is made (an asset appears, or events expire)",
                    extra={**self._log_extra, "asset_uri": uri, "reason": full},
                )
            self._refresh_lag()
            if await sleep_or_stop(self._clock, stop, backoff.next()):
                return False
        first = not self._lot.is_parked(uri)
        self._lot.park(uri, envelope, self._clock.now(), reason=reason)
        self._lot_dirty = True
        self._lot_changed.set()
        if first and reason == "awaitingConsumer":
            self._probe_at[uri] = self._clock.monotonic() + self._options.consume_probe_interval
            log.info(
                "a consumer DAG of the target still has the asset's previous event queued; "
                "holding its events until it runs (oneRunPerEvent)",
                extra={**self._log_extra, "asset_uri": uri, "event_id": envelope.event.id},
            )
        elif first:
            self._schedule_probe(uri)
            self._unknown_asset(uri, add=True)
            self.status.last_error = f"asset {uri!r} does not exist in the target; parked"
            log.warning(
                "target does not know the asset; parking its events until it exists",
                extra={**self._log_extra, "asset_uri": uri, "event_id": envelope.event.id},
            )
        self._set_gauges()
        return True

    async def _persist(self, stop: asyncio.Event) -> bool:
        """Save the target status (and so the parked events); retried until saved or stopped."""
        if self._save is None:
            self._lot_dirty = False
            return True
        backoff = self._options.backoff.start()
        while True:
            self._lot_dirty = False
            try:
                await self._save(self.status)
                return True
            except Exception as exc:
                self._lot_dirty = True
                self._error("save", exc, message="saving parked events failed; retrying")
                if await sleep_or_stop(self._clock, stop, backoff.next()):
                    return False

    def _schedule_probe(self, uri: str, *, now: bool = False) -> None:
        backoff = self._probe_backoff.setdefault(uri, self._options.park_probe_backoff.start())
        delay = 0.0 if now else backoff.next()
        self._probe_at[uri] = self._clock.monotonic() + delay

    def _set_gauges(self) -> None:
        name = self._target.name
        self._metrics.parked_events.labels(target=name).set(self._lot.total)
        awaiting = sum(a.count for a in self._lot.assets if a.reason == "awaitingConsumer")
        self._metrics.awaiting_consumer_events.labels(target=name).set(awaiting)
        oldest = self._lot.oldest_parked_at()
        age = 0.0 if oldest is None else (self._clock.now() - oldest).total_seconds()
        self._metrics.parked_oldest_age.labels(target=name).set(max(0.0, age))

    async def _tend_loop(self, stop: asyncio.Event) -> None:
        """Probe parked assets when due, drain them, expire old events; idle when none."""
        while not stop.is_set():
            if self._lot.total == 0 and not self._lot_dirty:
                self._set_gauges()
                self._lot_changed.clear()
                waits = {
                    asyncio.ensure_future(self._lot_changed.wait()),
                    asyncio.ensure_future(stop.wait()),
                }
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    # Also when `run` cancels this loop: `asyncio.wait` leaves the waits
                    # pending, and they would outlive the replayer.
                    for task in waits:
                        task.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)
                continue
            try:
                await self.tend(stop)
            except Exception as exc:
                self._error("parked", exc, message="handling parked events failed; retrying")
            if await sleep_or_stop(self._clock, stop, self._options.tend_interval):
                break

    async def tend(self, stop: asyncio.Event) -> None:
        """One look at the parked events: expire, probe the due assets, drain, save."""
        for uri, event in self._lot.expire(self._clock.now()):
            self._lot_dirty = True
            self.status.events_skipped += 1
            self._metrics.events_skipped.labels(
                target=self._target.name, reason="parked_expired"
            ).inc()
            log.warning(
                "parked event expired (its asset never appeared in the target); dropped",
                extra={
                    **self._log_extra,
                    "asset_uri": uri,
                    "event_id": event.id,
                    "parked_at": event.parked_at.isoformat(),
                },
            )
            if not self._lot.is_parked(uri):
                self._forget_probe(uri)
        now = self._clock.monotonic()
        for asset in self._lot.assets:
            if stop.is_set():
                break
            if self._probe_at.get(asset.uri, 0.0) <= now:
                await self._drain(asset.uri, stop)
        if self._lot_dirty:
            await self._persist(stop)
        self._set_gauges()

    def _forget_probe(self, uri: str) -> None:
        self._probe_at.pop(uri, None)
        self._probe_backoff.pop(uri, None)
        self._lot_suspect.discard(uri)
        self._unknown_asset(uri, add=False)

    async def _drain(self, uri: str, stop: asyncio.Event) -> None:
        """Probe one parked asset; if it exists, write its parked events in order."""
        skip = self._target.on_unknown_asset == UnknownAssetPolicy.SKIP
        awaiting = self._lot.reason(uri) == "awaitingConsumer"
        try:
            # Held for a consumer: the asset is known; the write itself reads the queue.
            if not skip and not awaiting and not await self._client.asset_exists(uri):
                self._schedule_probe(uri)
                return
            keys = TargetCopies()
            if uri in self._lot_suspect:
                keys = await self._marker_keys(uri)
                self._lot_suspect.discard(uri)
        except Exception as exc:
            self._error("probe", exc, uri=uri, message="probing a parked asset failed")
            self._schedule_probe(uri)
            return
        if not awaiting:
            log.info(
                "asset exists in the target now; writing its parked events",
                extra={**self._log_extra, "asset_uri": uri, "parked": len(self._lot_events(uri))},
            )
        since_save = 0
        while (head := self._lot.head(uri)) is not None:
            envelope = to_envelope(uri, head)
            if keys.holds(envelope.marker()) is not None:
                self._deduplicated(envelope, uri, "already in target", lag=False)
            else:
                outcome = await self._deliver(envelope, uri, False, stop, parked=True)
                if outcome is Outcome.STOPPED:
                    self._lot_suspect.add(uri)  # a write may have landed unseen
                    return
                if outcome is Outcome.UNKNOWN:
                    self._lot.set_reason(uri, "unknownAsset")
                    self._schedule_probe(uri)  # gone again (or a stale id): keep waiting
                    return
                if outcome is Outcome.WAIT:
                    # The consumer has not taken the event written before: look again soon.
                    if self._lot.reason(uri) != "awaitingConsumer":
                        self._lot.set_reason(uri, "awaitingConsumer")
                        self._lot_dirty = True
                        self._unknown_asset(uri, add=False)
                    interval = self._options.consume_probe_interval
                    self._probe_at[uri] = self._clock.monotonic() + interval
                    return  # `tend` saves what was written (the lot is dirty)
            self._lot.pop_head(uri)
            self._lot_dirty = True
            self._set_gauges()
            since_save += 1
            if since_save >= self._options.commit_batch:
                # Bounds what a crash can make the next start check against the target.
                await self._persist(stop)
                since_save = 0
        self._forget_probe(uri)
        log.info(
            "parked events of the asset delivered", extra={**self._log_extra, "asset_uri": uri}
        )

    def _lot_events(self, uri: str) -> list[object]:
        for asset in self._lot.assets:
            if asset.uri == uri:
                return list(asset.events)
        return []

    # -- accounting -------------------------------------------------------------------------

    def _progress(self, envelope: Envelope, *, lag: bool = True) -> None:
        now = self._clock.now()
        self.status.last_source_event_id = envelope.event.id
        self.status.last_replay_time = now
        if not lag:
            return
        self._pending.pop(envelope.marker().key, None)
        self._set_lag(min([*self._pending.values(), envelope.event.timestamp]))

    def _refresh_lag(self) -> None:
        """While work waits (a target outage): the lag of the oldest pending delivery grows."""
        if self._pending:
            self._set_lag(min(self._pending.values()))

    def _idle(self) -> None:
        """Nothing fetched, nothing pending: no lag (parked events are not pending work)."""
        self._pending = {}
        self._set_lag(None)

    def _set_lag(self, oldest: datetime | None) -> None:
        now = self._clock.now()
        lag = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        self.status.lag_seconds = round(lag, 3)
        self._metrics.lag_seconds.labels(target=self._target.name).set(lag)
        self._asset_lag.update(self._pending, now, idle=oldest is None)

    def _remember(self, key: Key) -> None:
        self._recent[key] = None
        while len(self._recent) > self._options.recent_keys:
            self._recent.popitem(last=False)

    def _written(self, envelope: Envelope, uri: str, key: Key, *, lag: bool = True) -> None:
        self._remember(key)
        self._replays.add(uri, key)
        if not self._lot.is_parked(uri):
            self._unknown_asset(uri, add=False)
        self.status.events_replayed += 1
        self.status.last_error = None
        self._failures.succeeded()
        self._metrics.events_replayed.labels(target=self._target.name).inc()
        self._progress(envelope, lag=lag)
        log.debug(
            "replayed",
            extra={**self._log_extra, "event_id": envelope.event.id, "asset_uri": uri},
        )

    def _deduplicated(self, envelope: Envelope, uri: str, why: str, *, lag: bool = True) -> None:
        self._remember(envelope.marker().key)
        self._replays.add(uri, envelope.marker().key)
        self.status.events_deduplicated += 1
        self._metrics.events_deduplicated.labels(target=self._target.name).inc()
        self._progress(envelope, lag=lag)
        log.info(
            "not written again",
            extra={
                **self._log_extra,
                "event_id": envelope.event.id,
                "asset_uri": uri,
                "reason": why,
            },
        )

    def _other_path(self, envelope: Envelope, uri: str, *, lag: bool = True) -> None:
        """A forwarded delivery whose origin event the target got by another path."""
        self._deduplicated(envelope, uri, "already in target by another path", lag=lag)
        self._metrics.events_other_path.labels(target=self._target.name).inc()

    def _on_path(self, envelope: Envelope) -> None:
        """A forwarded copy this target had already (it is on the copy's path): routing, not
        a problem, so counted in the metric only (not ``eventsSkipped``), and logged at
        debug level."""
        self._metrics.events_skipped.labels(target=self._target.name, reason="on_path").inc()
        self._progress(envelope)
        log.debug(
            "forwarded copy not written: this target is on its path",
            extra={**self._log_extra, "event_id": envelope.event.id},
        )

    def _skipped(self, envelope: Envelope, reason: str, *, lag: bool = True) -> None:
        self.status.events_skipped += 1
        self._metrics.events_skipped.labels(target=self._target.name, reason=reason).inc()
        self._progress(envelope, lag=lag)
        log.warning(
            "event skipped",
            extra={**self._log_extra, "event_id": envelope.event.id, "reason": reason},
        )

    def _foreign(self, delivery: Delivery) -> None:
        self.status.events_skipped += 1
        self._metrics.events_skipped.labels(target=self._target.name, reason="foreign").inc()
        log.warning(
            "message is not an airflow-asset-sync event; skipped",
            extra={
                **self._log_extra,
                "position": list(delivery.position),
                "problem": delivery.problem,
            },
        )

    def _failed(self, envelope: Envelope, uri: str, exc: Exception, *, lag: bool = True) -> None:
        self.status.events_failed += 1
        self._metrics.events_failed.labels(target=self._target.name).inc()
        self._progress(envelope, lag=lag)
        log.error(
            "target keeps rejecting an event; giving it up",
            extra={
                **self._log_extra,
                "event_id": envelope.event.id,
                "origin": envelope.origin,
                "asset_uri": uri,
                "error": str(exc),
            },
        )

    def _error(
        self,
        kind: str,
        exc: Exception,
        *,
        uri: str | None = None,
        message: str = "target write failed; retrying",
        report: bool = True,
    ) -> None:
        self.status.last_error = f"{type(exc).__name__}: {exc}"
        if report:
            self._failures.failed(exc)
        self._metrics.replay_errors.labels(target=self._target.name, kind=kind).inc()
        log.warning(
            message,
            extra={**self._log_extra, "asset_uri": uri, "error": self.status.last_error},
        )

    def _unknown_asset(self, uri: str, *, add: bool) -> None:
        listed = self.status.unknown_assets
        if add and uri not in listed and len(listed) < MAX_UNKNOWN_ASSETS:
            listed.append(uri)
        elif not add and uri in listed:
            listed.remove(uri)


def _committable(deliveries: Sequence[Delivery], done: set[int]) -> list[Delivery]:
    """Done deliveries up to the first undone one of each partition.

    A subscription resumes after the last committed position of a partition, so committing a
    done delivery behind an undone one would skip the undone one after a restart.
    """
    blocked: set[int] = set()
    out: list[Delivery] = []
    for index, delivery in enumerate(deliveries):
        partition = delivery.position[0]
        if partition in blocked:
            continue
        if index in done:
            out.append(delivery)
        else:
            blocked.add(partition)
    return out
