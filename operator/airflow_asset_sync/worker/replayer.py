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
- asset unknown to the target (404): policy ``retry`` backs off and retries until the asset
  exists (the migration case: the consuming DAG is deployed later), listing the URI in
  ``unknownAssets``; policy ``skip`` counts it skipped and commits;
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

One writer per sync (in a cluster, `lease`): with a `fence`, every write waits until the
worker holds its sync's Lease. If the lease was lost and then taken back after another
holder had it, that holder may have written what is pending here, so the next `commit_batch`
deliveries are checked against the target again, as after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from airflow_asset_sync.api.events import Envelope, Marker
from airflow_asset_sync.api.spec import Target, UnknownAssetPolicy
from airflow_asset_sync.api.status import MAX_UNKNOWN_ASSETS, TargetStatus
from airflow_asset_sync.clients.airflow.base import (
    AirflowClient,
    AssetNotFound,
    AuthFailed,
    BadRequest,
    EventQuery,
)
from airflow_asset_sync.worker.backoff import BackoffPolicy
from airflow_asset_sync.worker.clock import Clock, sleep_or_stop
from airflow_asset_sync.worker.lease import WriteFence
from airflow_asset_sync.worker.metrics import WorkerMetrics
from airflow_asset_sync.worker.transport import Delivery, Subscription

log = logging.getLogger(__name__)

#: (origin, source event id, sync): see `Marker.key`.
Key = tuple[str, int, str]
Check = Literal["cached", "fresh"] | None

TRANSIENT_BACKOFF = BackoffPolicy(initial=0.5, maximum=30.0)
UNKNOWN_ASSET_BACKOFF = BackoffPolicy(initial=2.0, maximum=60.0)
COMMIT_ATTEMPTS = 3


@dataclass(frozen=True)
class ReplayerOptions:
    #: Largest batch fetched, and so the most deliveries ever uncommitted.
    commit_batch: int = 100
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
    #: Back-off while the target does not know the asset (policy retry).
    unknown_asset_backoff: BackoffPolicy = UNKNOWN_ASSET_BACKOFF
    #: Attempts before a rejected (4xx) event is given up.
    max_rejections: int = 3
    #: Recently written keys remembered for dedup.
    recent_keys: int = 10_000
    #: Pages of the target's newest events of an asset read to look for a marker.
    dedup_pages: int = 2


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
        self._suspect_cache: dict[str, set[Key]] = {}
        self._semaphore = asyncio.Semaphore(options.concurrency)
        self._log_extra = {"target": target.name}
        self._fence = fence
        self._fence_generation = fence.generation if fence is not None else 0
        #: Deliveries still to check against the target after the lease changed hands.
        self._recheck_left = 0

    # -- main loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Replay until `stop` is set; writes in flight finish and what is done is committed.

        A failing fetch (broker unreachable) is retried with back-off rather than ending the
        replayer: nothing is lost while waiting, and the error shows in status and metrics.
        """
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
            if deliveries is None:
                break
            if deliveries:
                await self.replay(deliveries, stop)

    async def _fetch_or_stop(self, stop: asyncio.Event) -> list[Delivery] | None:
        """Fetch, abandoning the wait when asked to stop.

        Abandoning a fetch is safe: nothing fetched is committed, so a restart gets it again.
        """
        fetch = asyncio.ensure_future(
            self._subscription.fetch(self._options.commit_batch, self._options.fetch_timeout)
        )
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
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
        groups: dict[str, list[int]] = {}
        for index, delivery in enumerate(deliveries):
            if delivery.envelope is None:
                self._foreign(delivery)
                done.add(index)
            else:
                uri = self._target.map_uri(delivery.envelope.event.uri)
                groups.setdefault(uri, []).append(index)

        async def run_group(uri: str, indexes: list[int]) -> None:
            for index in indexes:
                envelope = deliveries[index].envelope
                assert envelope is not None
                if not await self._deliver(envelope, uri, index in suspect, stop):
                    return
                done.add(index)

        await asyncio.gather(*(run_group(uri, idx) for uri, idx in groups.items()))
        if self._suspect_left <= 0:
            self._suspect_cache.clear()
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
        self, envelope: Envelope, uri: str, suspect: bool, stop: asyncio.Event
    ) -> bool:
        """Write one event (or decide not to); False only when stopped before that."""
        key: Key = (envelope.origin, envelope.event.id, envelope.sync)
        if key in self._recent:
            self._recent.move_to_end(key)
            self._deduplicated(envelope, uri, "recently written")
            return True
        check: Check = "cached" if suspect else None
        if self._recheck_left > 0:
            self._recheck_left -= 1
            check = check or "cached"
        backoff = self._options.backoff.start()
        unknown_backoff = self._options.unknown_asset_backoff.start()
        rejections = 0
        while True:
            if self._fence is not None:
                generation = await self._fence.wait_held(stop)
                if generation is None:
                    return False
                if generation != self._fence_generation:
                    self._lease_changed_hands(generation)
                    check = "fresh"
            try:
                async with self._semaphore:
                    if check is not None:
                        if await self._in_target(uri, key, cached=check == "cached"):
                            self._deduplicated(envelope, uri, "already in target")
                            return True
                        check = None
                    await self._client.post_event(uri, envelope.target_extra())
            except AssetNotFound:
                self._unknown_asset(uri, add=True)
                if self._target.on_unknown_asset == UnknownAssetPolicy.SKIP:
                    self._skipped(envelope, "unknown_asset")
                    return True
                self._metrics.unknown_asset_retries.labels(target=self._target.name).inc()
                delay = unknown_backoff.next()
                self.status.last_error = f"asset {uri!r} does not exist in the target"
                log.warning(
                    "target does not know the asset; retrying",
                    extra={**self._log_extra, "asset_uri": uri, "delay_s": round(delay, 2)},
                )
            except BadRequest as exc:
                rejections += 1
                self._error("rejected", exc, uri=uri)
                if rejections >= self._options.max_rejections:
                    self._failed(envelope, uri, exc)
                    return True
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
                self._written(envelope, uri, key)
                return True
            if await sleep_or_stop(self._clock, stop, delay):
                return False

    def _lease_changed_hands(self, generation: int) -> None:
        self._fence_generation = generation
        self._suspect_cache.clear()
        self._recheck_left = self._options.commit_batch
        log.info(
            "lease taken back after another holder had it; checking the target again",
            extra={**self._log_extra, "deliveries": self._recheck_left},
        )

    async def _in_target(self, uri: str, key: Key, *, cached: bool) -> bool:
        if cached and uri in self._suspect_cache:
            return key in self._suspect_cache[uri]
        keys = await self._marker_keys(uri)
        if cached:
            self._suspect_cache[uri] = keys
        return key in keys

    async def _marker_keys(self, uri: str) -> set[Key]:
        """Marker keys on the target's newest events of this asset."""
        keys: set[Key] = set()
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
                    keys.add(marker.key)
            if len(page.events) + len(page.invalid) < limit:
                break
        return keys

    # -- accounting -------------------------------------------------------------------------

    def _progress(self, envelope: Envelope) -> None:
        now = self._clock.now()
        self.status.last_source_event_id = envelope.event.id
        self.status.last_replay_time = now
        lag = max(0.0, (now - envelope.event.timestamp).total_seconds())
        self.status.lag_seconds = round(lag, 3)
        self._metrics.lag_seconds.labels(target=self._target.name).set(lag)

    def _remember(self, key: Key) -> None:
        self._recent[key] = None
        while len(self._recent) > self._options.recent_keys:
            self._recent.popitem(last=False)

    def _written(self, envelope: Envelope, uri: str, key: Key) -> None:
        self._remember(key)
        self._unknown_asset(uri, add=False)
        self.status.events_replayed += 1
        self.status.last_error = None
        self._metrics.events_replayed.labels(target=self._target.name).inc()
        self._progress(envelope)
        log.debug(
            "replayed",
            extra={**self._log_extra, "event_id": envelope.event.id, "asset_uri": uri},
        )

    def _deduplicated(self, envelope: Envelope, uri: str, why: str) -> None:
        self._remember((envelope.origin, envelope.event.id))
        self.status.events_deduplicated += 1
        self._metrics.events_deduplicated.labels(target=self._target.name).inc()
        self._progress(envelope)
        log.info(
            "not written again",
            extra={
                **self._log_extra,
                "event_id": envelope.event.id,
                "asset_uri": uri,
                "reason": why,
            },
        )

    def _skipped(self, envelope: Envelope, reason: str) -> None:
        self.status.events_skipped += 1
        self._metrics.events_skipped.labels(target=self._target.name, reason=reason).inc()
        self._progress(envelope)
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

    def _failed(self, envelope: Envelope, uri: str, exc: Exception) -> None:
        self.status.events_failed += 1
        self._metrics.events_failed.labels(target=self._target.name).inc()
        self._progress(envelope)
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
    ) -> None:
        self.status.last_error = f"{type(exc).__name__}: {exc}"
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
