"""`SyncWorker`: one sync's poller, replayers and status, started and stopped together.

The worker talks to the outside only through what it is given: an Airflow client factory,
a publisher and one subscription per target (Kafka, or `channel.InProcessChannel`), and an
`OffsetStore`. It never imports an HTTP, Kafka or Kubernetes library itself.

Status: the poller saves the checkpoint after each publish (that is the cursor; it must be
durable), and a replayer saves its target's status before it commits a delivery it parked
(parked events live there; see `parking`). Counters, lag and last-poll times are flushed
every `status_interval` and at stop, not per event: in a cluster every save is a PATCH to
the API server. A flush is skipped when nothing changed since the last successful one (an
idle sync would otherwise patch its status every 10 s), except that `lastPollTime` alone is
refreshed every `poll_time_refresh`, so a quiet sync still shows it polls.

Graceful stop (SIGTERM from the kubelet, Ctrl-C locally), in this order:

1. Stop polling. An iteration under way finishes: its publish completes and its checkpoint
   is saved. With the in-process channel that publish waits for the replayers, which is why
   they keep running during this step.
2. If the publish cannot finish within the grace period (a target is down), stop the
   publisher so the publish fails; its checkpoint is then not saved and the events are read
   again after the restart.
3. Stop the replayers: writes in flight finish, back-offs are abandoned, what is done is
   committed.
4. Flush status, stop the transport, close the clients.

The default grace (20 s) fits inside Kubernetes' default 30 s termination grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from airflow_asset_sync.api.spec import Endpoint, SyncSpec, Target
from airflow_asset_sync.api.status import SourceStatus, TargetStatus, WorkerStatus
from airflow_asset_sync.api.transport import Publisher, Subscription
from airflow_asset_sync.clients.airflow.base import AirflowClient, RunSource
from airflow_asset_sync.worker.backoff import BackoffPolicy
from airflow_asset_sync.worker.clock import Clock, SystemClock, sleep_or_stop
from airflow_asset_sync.worker.cursor import DEFAULT_OVERLAP, make_cursor
from airflow_asset_sync.worker.failures import FailureReport, Side
from airflow_asset_sync.worker.filters import EventFilter
from airflow_asset_sync.worker.health import Health, readiness_timeout
from airflow_asset_sync.worker.lease import WriteFence
from airflow_asset_sync.worker.metrics import InstrumentedClient, WorkerMetrics
from airflow_asset_sync.worker.offsets import OffsetStore
from airflow_asset_sync.worker.parking import ParkingLimits
from airflow_asset_sync.worker.poller import Poller, PollPace, PollSettings
from airflow_asset_sync.worker.redelivery import check_publish_bound
from airflow_asset_sync.worker.replay import ReplayRun, abandoned, due
from airflow_asset_sync.worker.replayer import Replayer, ReplayerOptions
from airflow_asset_sync.worker.runs.cursor import CompletionCursor
from airflow_asset_sync.worker.runs.poller import CompletionPoller, CompletionSettings

log = logging.getLogger(__name__)

#: Builds a client for the source or a target (`Target` is an `Endpoint`). Async because
#: ``apiVersion: auto`` needs a request to find out which API the instance speaks.
ClientFactory = Callable[[Endpoint], Awaitable[AirflowClient]]

#: Retrying a client set-up that failed (instance down at start, version detection failed).
CONNECT_BACKOFF = BackoffPolicy(initial=1.0, maximum=60.0)


@dataclass(frozen=True)
class WorkerOptions:
    overlap: timedelta = DEFAULT_OVERLAP
    #: Events per poll batch; None picks the cursor's default (3.x 1000, 2.x 10000).
    max_batch: int | None = None
    max_invalid_retries: int = 3
    #: Events per publish before each checkpoint (the poller's and a replay's); None: the
    #: replayers' ``commit_batch``, the most allowed (`redelivery`).
    max_publish: int | None = None
    #: Seconds between status flushes (counters, lag, last poll time).
    status_interval: float = 10.0
    #: Seconds after which a newer `lastPollTime` alone is worth a status write.
    poll_time_refresh: float = 60.0
    #: Seconds the stop sequence may take in total before work is abandoned.
    stop_grace: float = 20.0
    replayer: ReplayerOptions = field(default_factory=ReplayerOptions)

    def __post_init__(self) -> None:
        check_publish_bound(max_publish=self.publish_bound, commit_batch=self.replayer.commit_batch)

    @property
    def publish_bound(self) -> int:
        """Events per publish: `max_publish`, else the replayers' ``commit_batch``."""
        return self.max_publish if self.max_publish is not None else self.replayer.commit_batch


class SyncWorker:
    """Runs one AirflowAssetSync until stopped.

    ``await worker.run()`` returns after a graceful stop (`request_stop`, `stop`, or a
    signal once `install_signal_handlers` was called), and raises if a component died, after
    stopping the others, so the process exits non-zero and is restarted.
    """

    def __init__(
        self,
        *,
        spec: SyncSpec,
        sync: str,
        client_factory: ClientFactory,
        publisher: Publisher,
        subscriptions: Mapping[str, Subscription],
        store: OffsetStore,
        metrics: WorkerMetrics | None = None,
        health: Health | None = None,
        clock: Clock | None = None,
        options: WorkerOptions | None = None,
        fence: WriteFence | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        names = {t.name for t in spec.targets}
        if set(subscriptions) != names:
            raise ValueError(
                f"need one subscription per target {sorted(names)}, got {sorted(subscriptions)}"
            )
        self._spec = spec
        self._sync = sync
        self._client_factory = client_factory
        self._publisher = publisher
        self._subscriptions = dict(subscriptions)
        self._store = store
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self._clock: Clock = clock if clock is not None else SystemClock()
        if health is None:
            health = Health(
                monotonic=self._clock.monotonic,
                ready_after=readiness_timeout(spec.poll_interval_seconds),
            )
        self.health = health
        self._options = options if options is not None else WorkerOptions()
        #: In a cluster, the sync's Lease: every target write waits for it (see `lease`).
        self._fence = fence
        #: Set by accepted pokes (`spec.source.push`, see `poke`): the poller reads now.
        self._wake = wake
        self._stop_requested = asyncio.Event()
        self._finished = asyncio.Event()
        self._status: WorkerStatus | None = None
        #: The status as last saved (JSON form): a flush with nothing new writes nothing.
        self._saved: dict[str, Any] | None = None
        self._stopping = False
        self._log_extra = {"sync": sync}
        #: Target clients once connected, for a replay's check that every target answers.
        self._target_clients: dict[str, AirflowClient] = {}

    @property
    def status(self) -> WorkerStatus | None:
        """The live worker status (None before `run` loaded it)."""
        return self._status

    def request_stop(self) -> None:
        """Ask for a graceful stop; safe to call from a signal handler or twice."""
        if not self._stop_requested.is_set():
            log.info("stop requested", extra=self._log_extra)
        self.health.stopping()
        self._stop_requested.set()

    async def stop(self) -> None:
        """Request a stop and wait until `run` has finished it."""
        self.request_stop()
        await self._finished.wait()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT request a graceful stop (call from inside the running loop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run(self) -> None:
        clients: list[AirflowClient] = []
        try:
            await self._run(clients)
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()
            self._finished.set()

    async def _client(self, endpoint: Endpoint, role: str) -> AirflowClient:
        raw = await self._client_factory(endpoint)
        return InstrumentedClient(raw, role=role, metrics=self.metrics)

    async def _run(self, clients: list[AirflowClient]) -> None:
        spec = self._spec
        # Entries of targets removed from the spec are pruned by the store.
        status = await self._store.load(targets={t.name for t in spec.targets})
        for target in spec.targets:
            status.target(target.name)
        # Failures are this pod's to report: one left by an earlier worker (before a fixed
        # Secret rolled it) must not keep the sync Stalled.
        status.source.failure = None
        for target_status in status.targets:
            target_status.failure = None
        self._status = status
        if status.replay is not None and abandoned(spec.replay, status.replay, self._clock.now()):
            await self._store.save_replay(status.replay)
        self._saved = status.model_dump(mode="json")

        await self._publisher.start()
        for subscription in self._subscriptions.values():
            await subscription.start()
        log.info(
            "worker starting",
            extra={
                **self._log_extra,
                "targets": [t.name for t in spec.targets],
                "checkpoint_initialized": status.source.checkpoint.initialized,
            },
        )

        poll_stop, replay_stop, aux_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        poll_task = asyncio.create_task(self._source_side(poll_stop, clients), name="poller")
        replay_tasks = [
            asyncio.create_task(
                self._target_side(target, replay_stop, clients), name=f"replayer:{target.name}"
            )
            for target in spec.targets
        ]
        aux_tasks = [
            asyncio.create_task(self._flush_periodically(aux_stop), name="status-flush"),
            asyncio.create_task(self._heartbeat(aux_stop), name="heartbeat"),
        ]
        self.health.started()
        stop_wait = asyncio.create_task(self._stop_requested.wait())
        done, _ = await asyncio.wait(
            {poll_task, *replay_tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED
        )
        died = [t for t in done if t is not stop_wait]
        if died:
            reason = _task_failure(died[0])
            self.health.failed(reason)
            log.error("worker component stopped unexpectedly", extra={"reason": reason})
        stop_wait.cancel()
        await self._shutdown(poll_task, replay_tasks, aux_tasks, poll_stop, replay_stop, aux_stop)
        for task in died:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
        if died:
            raise RuntimeError(f"worker component {died[0].get_name()} stopped unexpectedly")

    async def _connect(
        self,
        endpoint: Endpoint,
        role: str,
        status: SourceStatus | TargetStatus,
        stop: asyncio.Event,
    ) -> AirflowClient | None:
        """A client for `endpoint`, retried with back-off; None if stopped first.

        Why retry here instead of failing the worker: with ``apiVersion: auto`` building a
        client needs a request, and one target being down at start must not keep the source
        and the other targets from running (nor crash-loop the pod).
        """
        backoff = CONNECT_BACKOFF.start()
        side: Side = "Source" if isinstance(status, SourceStatus) else "Target"
        failures = FailureReport(status, side=side, clock=self._clock)
        while True:
            try:
                client = await self._client(endpoint, role)
            except Exception as exc:
                delay = backoff.next()
                status.last_error = f"connect: {type(exc).__name__}: {exc}"
                failures.failed(exc)
                if isinstance(status, TargetStatus):
                    # Nothing is replayed and the backlog is unknown: no lag figure beats a
                    # stale one (the last figure kept showing a healthy lag).
                    status.lag_seconds = None
                log.warning(
                    "cannot set up the Airflow client; retrying",
                    extra={
                        **self._log_extra,
                        "role": role,
                        "error": status.last_error,
                        "delay_s": round(delay, 2),
                    },
                )
                if await sleep_or_stop(self._clock, stop, delay):
                    return None
            else:
                failures.succeeded()
                return client

    async def _source_side(self, stop: asyncio.Event, clients: list[AirflowClient]) -> None:
        assert self._status is not None
        spec, options, status = self._spec, self._options, self._status.source
        client = await self._connect(spec.source, "source", status, stop)
        if client is None:
            return
        clients.append(client)
        status.api_version = client.api_version
        status.last_error = None
        gate = asyncio.Lock()
        poller = Poller(
            settings=PollSettings.from_spec(
                spec,
                sync=self._sync,
                overlap=options.overlap,
                max_invalid_retries=options.max_invalid_retries,
                # Checked against the replayers' commit_batch (`WorkerOptions`).
                max_publish=options.publish_bound,
            ),
            cursor=make_cursor(client, overlap=options.overlap, max_batch=options.max_batch),
            publisher=self._publisher,
            store=self._store,
            status=status,
            clock=self._clock,
            metrics=self.metrics,
            health=self.health,
            wake=self._wake,
            gate=gate,
        )
        log.info("polling the source", extra={**self._log_extra, "api": client.api_version})
        # Side by side: the live stream goes on while history is re-read (`replay`), and
        # finished DAG runs are read beside the events (`spec.dagRuns`).
        side = [poller.run(stop)]
        replay = self._replay_run(client)
        if replay is not None:
            side.append(replay.run(stop))
        if spec.dag_runs:
            side.append(self._completions(client, status, gate).run(stop))
        await asyncio.gather(*side)

    def _completions(
        self, client: AirflowClient, status: SourceStatus, gate: asyncio.Lock
    ) -> CompletionPoller:
        """The poller of `spec.dagRuns`, sharing the events poller's publish `gate`."""
        spec, options = self._spec, self._options
        if not isinstance(client, RunSource):
            raise TypeError(f"{type(client).__name__} cannot list DAG runs (spec.dagRuns)")
        return CompletionPoller(
            settings=CompletionSettings(
                sync=self._sync,
                origin=spec.source.identity,
                poll_interval_s=spec.poll_interval_seconds,
                start_from=spec.start,
                overlap=options.overlap,
                max_publish=options.publish_bound,
            ),
            cursor=CompletionCursor(
                client, spec.dag_runs, instance=spec.source.identity, overlap=options.overlap
            ),
            publisher=self._publisher,
            store=self._store,
            status=status,
            clock=self._clock,
            metrics=self.metrics,
            gate=gate,
        )

    def _replay_run(self, client: AirflowClient) -> ReplayRun | None:
        """The replay `spec.replay` asks for, if it is due (`replay.due`)."""
        assert self._status is not None
        spec = self._spec
        if spec.replay is None or not due(spec.replay, self._status.replay):
            return None
        return ReplayRun(
            replay=spec.replay,
            status=self._status,
            source=client,
            targets=lambda: self._target_clients,
            target_names=[t.name for t in spec.targets],
            publisher=self._publisher,
            store=self._store,
            sync=self._sync,
            origin=spec.source.identity,
            event_filter=EventFilter(spec.assets),
            clock=self._clock,
            # The poller's pace while events flow, one page at a time.
            pause=PollPace(spec.poll_interval_seconds).active_interval,
            max_publish=self._options.publish_bound,
            forward_to=[t.identity for t in spec.targets],
            max_hops=spec.max_hops,
        )

    async def _target_side(
        self, target: Target, stop: asyncio.Event, clients: list[AirflowClient]
    ) -> None:
        assert self._status is not None
        status = self._status.target(target.name)
        client = await self._connect(target, f"target:{target.name}", status, stop)
        if client is None:
            return
        clients.append(client)
        self._target_clients[target.name] = client
        status.api_version = client.api_version
        status.last_error = None
        options = replayer_options(self._options.replayer, target, targets=len(self._spec.targets))
        # What a crash makes the poller publish again must fit this replayer's suspect window.
        check_publish_bound(
            max_publish=self._options.publish_bound, commit_batch=options.commit_batch
        )
        replayer = Replayer(
            target=target,
            client=client,
            subscription=self._subscriptions[target.name],
            status=status,
            clock=self._clock,
            metrics=self.metrics,
            options=options,
            fence=self._fence,
            # Parked events must be stored before the delivery that carried them is
            # committed: the replayer saves its target status itself for that.
            save=self._store.save_target,
        )
        log.info(
            "replaying into target",
            extra={**self._log_extra, "target": target.name, "api": client.api_version},
        )
        await replayer.run(stop)

    async def _shutdown(
        self,
        poll_task: asyncio.Task[None],
        replay_tasks: list[asyncio.Task[None]],
        aux_tasks: list[asyncio.Task[None]],
        poll_stop: asyncio.Event,
        replay_stop: asyncio.Event,
        aux_stop: asyncio.Event,
    ) -> None:
        self.health.stopping()
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.stop_grace

        poll_stop.set()
        if not await _wait_all([poll_task], deadline - loop.time()):
            log.warning(
                "publish did not complete within the grace period; abandoning it, "
                "its events are read again after restart",
                extra=self._log_extra,
            )
            with contextlib.suppress(Exception):
                await self._publisher.stop()
            if not await _wait_all([poll_task], 5.0):
                await _cancel([poll_task])

        replay_stop.set()
        if not await _wait_all(replay_tasks, max(1.0, deadline - loop.time())):
            log.warning("replayers did not stop in time; cancelling", extra=self._log_extra)
            await _cancel(replay_tasks)

        aux_stop.set()
        await _cancel(aux_tasks)
        await self.flush()
        for name, subscription in self._subscriptions.items():
            try:
                await subscription.stop()
            except Exception as exc:
                log.warning("subscription stop failed", extra={"target": name, "error": str(exc)})
        try:
            await self._publisher.stop()
        except Exception as exc:
            log.warning("publisher stop failed", extra={"error": str(exc)})
        log.info("worker stopped", extra=self._log_extra)

    async def flush(self) -> None:
        """Save the worker status (counters, lag, checkpoint) if anything changed."""
        if self._status is None:
            return
        current = self._status.model_dump(mode="json")
        if not self._flush_needed(current):
            return
        try:
            await self._store.save_source(self._status.source)
            for target in self._status.targets:
                await self._store.save_target(target)
            replay = self._status.replay
            if replay is not None and current.get("replay") != (self._saved or {}).get("replay"):
                await self._store.save_replay(replay)
        except Exception as exc:
            if self._stopping and getattr(exc, "status", None) in (403, 404):
                # Expected when the sync is being deleted: the garbage collector deletes the
                # AirflowAssetSync and the worker's Role while this pod is still stopping.
                log.info(
                    "final status not saved: the AirflowAssetSync or the worker's access to "
                    "it is gone (being deleted)",
                    extra={**self._log_extra, "error": str(exc)},
                )
                return
            log.warning("status flush failed", extra={**self._log_extra, "error": str(exc)})
            return
        self._saved = current

    def _flush_needed(self, current: dict[str, Any]) -> bool:
        saved = self._saved
        if saved is None:
            return True
        if current == saved:
            return False
        new_poll = current["source"].get("last_poll_time")
        old_poll = saved["source"].get("last_poll_time")
        same_otherwise = _without_poll_times(current) == _without_poll_times(saved)
        if not same_otherwise or new_poll is None or old_poll is None:
            return True
        age = datetime.fromisoformat(new_poll) - datetime.fromisoformat(old_poll)
        return age.total_seconds() >= self._options.poll_time_refresh

    async def _flush_periodically(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(self._clock, stop, self._options.status_interval):
            await self.flush()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Real time on purpose: liveness is about this event loop turning, not a fake clock."""
        while not stop.is_set():
            self.health.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


#: Bytes of parked events a whole sync may hold. They are stored in the AirflowAssetSync's
#: status, and etcd refuses an object above 1.5 MB: the spec and the rest of the status need
#: room too. A sync with many targets shares this, so each target gets less than the default.
PARKED_BYTES_PER_SYNC = 1024 * 1024


def replayer_options(base: ReplayerOptions, target: Target, *, targets: int) -> ReplayerOptions:
    """The worker's replayer options with this target's parking limits from its spec.

    The byte budget is not a spec field: it keeps the status object below etcd's limit, which
    is not the user's to trade away. It is the default (256 KiB) or an equal share of
    `PARKED_BYTES_PER_SYNC` among the sync's `targets`, whichever is smaller.
    """
    limits = ParkingLimits(
        max_events=target.parking.max_events,
        max_bytes=min(base.parking.max_bytes, PARKED_BYTES_PER_SYNC // max(1, targets)),
        max_age=target.parking.max_age_delta,
    )
    return replace(base, parking=limits)


def _without_poll_times(status: dict[str, Any]) -> dict[str, Any]:
    """`status` with the poll times blanked: the events' and the completions' (`runs`),
    which alone are refreshed only every `poll_time_refresh`."""
    source = {**status["source"], "last_poll_time": None}
    if isinstance(source.get("runs"), dict):
        source["runs"] = {**source["runs"], "last_poll_time": None}
    return {**status, "source": source}


async def _wait_all(tasks: list[asyncio.Task[None]], seconds: float) -> bool:
    if not tasks:
        return True
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, seconds))
    return not pending


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _task_failure(task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return f"{task.get_name()} was cancelled"
    exc = task.exception()
    if exc is None:
        return f"{task.get_name()} returned"
    return f"{task.get_name()}: {type(exc).__name__}: {exc}"
