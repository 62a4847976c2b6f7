"""One writer per sync: the worker holds a coordination.k8s.io/v1 Lease while it writes.

Why: the worker Deployment's `Recreate` strategy keeps two worker pods apart only during a
rollout. When a pod is deleted or evicted, the ReplicaSet starts the replacement at once while
the old pod still replays during its termination grace period. The new pod's after-crash
dedup check (it lists the target's events for our marker) then reads a listing from before
the old pod's writes landed, and writes the same events again: 4 and 6 duplicates were seen
against a slow target. Kafka does not show it only because its consumer group hands a
partition to one consumer at a time.

The protocol, as client-go's leader election does it:

- Acquire before anything is loaded or replayed (the checkpoint, the dedup listing). While
  another holder's lease is live, wait (not Ready, one info line naming the holder) until it
  is released or expires.
- Expiry is judged on this process's monotonic clock: a record that has not changed for its
  ``leaseDurationSeconds`` since we first saw that version has expired. Comparing its
  ``renewTime`` with our wall clock would trust two pods' clocks to agree.
- Every write is conditional on the ``resourceVersion`` read, so a take-over is a
  compare-and-swap: two candidates cannot both win.
- Renew every `LeaseTimings.renew_every`. A holder that has not renewed for
  `LeaseTimings.renew_deadline` (API server unreachable) is *fenced*: it starts no write until
  it holds the lease again. The deadline is shorter than the duration, so a write already in
  flight has the difference to finish before anyone else may take over.
- Release (clear ``holderIdentity``) only after the worker stopped: every write finished or
  was abandoned, status flushed. The next pod then starts at once instead of after expiry.

Limit, stated: a lease stops a process from *starting* writes. A POST already sent when the
old pod's grace period ran out, buffered by a target that is stalled, can still land after
the lease changed hands; Airflow takes no fencing token that could refuse it.

This module is pure: the store is a protocol (`KubeLeaseStore` adapts the kube client; unit
tests use an in-memory one) and time comes from a `Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from airflow_asset_sync.api.status import ReplayStatus, SourceStatus, TargetStatus, WorkerStatus
from airflow_asset_sync.worker.clock import Clock, sleep_or_stop
from airflow_asset_sync.worker.offsets import OffsetStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds. Defaults as Kubernetes' own controllers use them (15 s lease, 10 s to renew)."""

    #: ``leaseDurationSeconds`` written: how long others wait after our last renewal.
    duration: float = 15.0
    #: Renewal period while held.
    renew_every: float = 5.0
    #: Not renewed for this long: fenced (no new writes). Must be below `duration`.
    renew_deadline: float = 10.0
    #: Period of retries: while waiting for another holder, and after a failed renewal.
    retry_every: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.renew_every < self.renew_deadline < self.duration:
            raise ValueError("need 0 < renew_every < renew_deadline < duration")


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease the protocol reads and writes."""

    holder: str | None
    duration_s: int
    acquired: datetime | None = None
    renewed: datetime | None = None
    transitions: int = 0
    #: ``metadata.resourceVersion``: what a conditional update is conditional on.
    version: str = ""


class LeaseConflict(Exception):
    """The Lease was created or changed by someone else since the version we had."""


class LeaseStore(Protocol):
    """Where the Lease lives (`KubeLeaseStore`, or an in-memory fake)."""

    async def get(self) -> LeaseRecord | None:
        """The Lease as stored, or None if it does not exist."""
        ...

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create it; `LeaseConflict` if it exists already."""
        ...

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        """Write it if it is still at ``record.version``; `LeaseConflict` otherwise."""
        ...


def new_identity(host: str | None = None) -> str:
    """``<pod name>_<random>``: the pod name says who holds it in ``kubectl get lease``; the
    suffix tells a restarted container from its previous run in the same pod, which must not
    inherit the old run's lease without taking it over."""
    name = host or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{name}_{secrets.token_hex(4)}"


def can_take(record: LeaseRecord | None, *, me: str, unchanged_for: float) -> bool:
    """Whether `me` may write itself into `record` now.

    Free (no Lease, or no holder: released), ours already, or expired: unchanged for its
    whole duration, as measured by our clock since we first saw this version.
    """
    if record is None or not record.holder or record.holder == me:
        return True
    return unchanged_for >= record.duration_s


class WriteFence(Protocol):
    """What a writer asks before each write (`LeaseHolder` implements it)."""

    @property
    def generation(self) -> int:
        """Changes each time the lease is taken from another holder (or from nobody)."""
        ...

    async def wait_held(self, stop: asyncio.Event) -> int | None:
        """Return the generation once the lease is held; None if `stop` came first."""
        ...


class LeaseHolder:
    """Acquires, renews and releases one Lease for one worker process.

    Use: ``await acquire(stop)`` before the worker starts; ``keep(stop)`` as a task while it
    runs; `wait_held` before each write (`WriteFence`); ``await release()`` after it stopped.
    `on_change` hears every change of `is_held` (metrics, readiness).
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        identity: str,
        clock: Clock,
        timings: LeaseTimings | None = None,
        on_change: Callable[[bool, str], None] | None = None,
        log_extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._store = store
        self.identity = identity
        self._clock = clock
        self._timings = timings if timings is not None else LeaseTimings()
        self._on_change = on_change
        self._log_extra = dict(log_extra or {})
        self._held = False
        self._acquired = asyncio.Event()
        #: Our last successful write, and the monotonic time it was *sent* (conservative).
        self._record: LeaseRecord | None = None
        self._renewed_at = 0.0
        self._renew_failing = False
        self._generation = 0
        #: (version, monotonic time we first saw it): the basis of expiry.
        self._seen: tuple[str, float] | None = None
        self._waiting_for: str | None = None
        self._store_failing = False

    @property
    def generation(self) -> int:
        return self._generation

    def is_held(self) -> bool:
        """Held and renewed within the deadline. Checking is what fences: past the deadline
        this turns False (and stays so until re-acquired) even while a renewal still hangs."""
        if self._held:
            silent = self._clock.monotonic() - self._renewed_at
            if silent >= self._timings.renew_deadline:
                self._lose(f"not renewed for {silent:.1f}s")
        return self._held

    async def wait_held(self, stop: asyncio.Event) -> int | None:
        while not self.is_held():
            if stop.is_set():
                return None
            await _either(self._acquired, stop)
        return self._generation

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until the lease is ours; False if `stop` was set first."""
        while not stop.is_set():
            if await self._try_acquire():
                return True
            if await sleep_or_stop(self._clock, stop, self._timings.retry_every):
                break
        return False

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew while held, try to re-acquire while not, until `stop` is set."""
        while True:
            held = self.is_held()
            delay = (
                self._timings.renew_every
                if held and not self._renew_failing
                else self._timings.retry_every
            )
            if await sleep_or_stop(self._clock, stop, delay):
                return
            if self._held:
                await self._renew()
            else:
                await self._try_acquire()

    async def release(self) -> None:
        """Give the lease up, if the stored record still names us; call after the last write.

        Never raises: a lease not released is taken over when it expires.
        """
        self._set_held(False, "released")
        try:
            current = await self._store.get()
            if current is None or current.holder != self.identity:
                return
            await self._store.update(replace(current, holder=None, renewed=self._clock.now()))
        except Exception as exc:
            log.warning(
                "lease not released; the next worker takes it over when it expires",
                extra={**self._log_extra, "error": str(exc)},
            )
            return
        log.info("lease released", extra={**self._log_extra, "holder": self.identity})

    # -- internals ------------------------------------------------------------------------

    async def _try_acquire(self) -> bool:
        try:
            record = await self._store.get()
        except Exception as exc:
            self._store_error("cannot read the lease; retrying", exc)
            return False
        now = self._clock.monotonic()
        unchanged_for = 0.0
        if record is not None:
            if self._seen is None or self._seen[0] != record.version:
                self._seen = (record.version, now)
            unchanged_for = now - self._seen[1]
        if not can_take(record, me=self.identity, unchanged_for=unchanged_for):
            assert record is not None
            assert record.holder is not None
            if self._waiting_for != record.holder:
                self._waiting_for = record.holder
                log.info(
                    "lease held by another worker; waiting until it is released or expires",
                    extra={
                        **self._log_extra,
                        "holder": record.holder,
                        "lease_duration_s": record.duration_s,
                    },
                )
            self._notify(False, f"waiting for the lease held by {record.holder}")
            return False
        taken_from = None if record is None else record.holder
        ours_already = taken_from == self.identity
        wall = self._clock.now()
        wanted = LeaseRecord(
            holder=self.identity,
            duration_s=round(self._timings.duration),
            acquired=record.acquired if record is not None and ours_already else wall,
            renewed=wall,
            transitions=0 if record is None else record.transitions + (0 if ours_already else 1),
            version="" if record is None else record.version,
        )
        sent = self._clock.monotonic()
        try:
            stored = await (
                self._store.create(wanted) if record is None else self._store.update(wanted)
            )
        except LeaseConflict:
            return False  # another candidate won this round; read again
        except Exception as exc:
            self._store_error("cannot write the lease; retrying", exc)
            return False
        self._store_failing = False
        self._record, self._renewed_at, self._renew_failing = stored, sent, False
        self._waiting_for = None
        if not ours_already:
            # Someone else (or nobody) held it since our last write: a writer must re-check
            # the target for what they wrote before trusting its own memory.
            self._generation += 1
        expired = bool(taken_from) and not ours_already
        log.info(
            "lease acquired",
            extra={
                **self._log_extra,
                "holder": self.identity,
                "previous_holder": taken_from,
                "taken_over_after_expiry": expired,
                "waited_s": round(unchanged_for, 1) if expired else None,
            },
        )
        self._set_held(True, "lease held")
        return True

    async def _renew(self) -> None:
        assert self._record is not None
        wanted = replace(
            self._record,
            holder=self.identity,
            duration_s=round(self._timings.duration),
            renewed=self._clock.now(),
        )
        sent = self._clock.monotonic()
        try:
            stored = await self._store.update(wanted)
        except LeaseConflict:
            # Changed under us. Most likely taken over; the next round reads it again (and
            # takes it straight back if it still names us: a renewal that timed out but landed).
            self._lose("the lease was changed by another writer")
            return
        except Exception as exc:
            self._renew_failing = True
            log.warning(
                "lease renewal failed; retrying",
                extra={
                    **self._log_extra,
                    "error": str(exc),
                    "since_last_renewal_s": round(self._clock.monotonic() - self._renewed_at, 1),
                    "fenced_after_s": self._timings.renew_deadline,
                },
            )
            return
        self._record, self._renewed_at, self._renew_failing = stored, sent, False
        if not self._held:
            # Fenced while this renewal hung, and it landed: nobody wrote the lease in between
            # (the write was conditional), so it is still ours and nothing needs re-checking.
            log.info("lease renewed after a fence; writing again", extra=self._log_extra)
            self._set_held(True, "lease held")

    def _lose(self, reason: str) -> None:
        log.warning(
            "lease lost; no new writes until it is re-acquired",
            extra={**self._log_extra, "holder": self.identity, "reason": reason},
        )
        self._set_held(False, f"lease lost: {reason}")

    def _set_held(self, held: bool, reason: str) -> None:
        self._held = held
        if held:
            self._acquired.set()
        else:
            self._acquired.clear()
        self._notify(held, reason)

    def _notify(self, held: bool, reason: str) -> None:
        if self._on_change is not None:
            self._on_change(held, reason)

    def _store_error(self, message: str, exc: Exception) -> None:
        """Warn once per outage, not once a second."""
        if not self._store_failing:
            log.warning(message, extra={**self._log_extra, "error": str(exc)})
        self._store_failing = True


async def _either(event: asyncio.Event, stop: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


class FencedOffsetStore:
    """An `OffsetStore` whose saves are skipped while the lease is not held.

    Why: a fenced worker's status may be older than that of the worker that took over, and
    saving it would move the checkpoint back. Skipping is safe: every save replaces the whole
    section, so the next one carries everything, and a checkpoint left behind only costs
    re-reads (which dedup absorbs), never events.
    """

    def __init__(self, inner: OffsetStore, lease: LeaseHolder) -> None:
        self._inner = inner
        self._lease = lease

    async def load(self, targets: Collection[str] | None = None) -> WorkerStatus:
        return await self._inner.load(targets)

    async def save_source(self, source: SourceStatus) -> None:
        if self._lease.is_held():
            await self._inner.save_source(source)

    async def save_target(self, target: TargetStatus) -> None:
        if self._lease.is_held():
            await self._inner.save_target(target)

    async def save_replay(self, replay: ReplayStatus) -> None:
        if self._lease.is_held():
            await self._inner.save_replay(replay)


# -- the Lease object in Kubernetes ------------------------------------------------------------


class LeaseApi(Protocol):
    """The kube client's Lease calls (`clients.kube.KubeClient`)."""

    def get_lease(self, *, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]: ...


def micro_time(value: datetime) -> str:
    """A Kubernetes MicroTime: UTC, always six fraction digits (the API server insists)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def record_from_manifest(body: Mapping[str, Any]) -> LeaseRecord:
    spec = body.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        duration_s=int(spec.get("leaseDurationSeconds") or 0),
        acquired=_parse_time(spec.get("acquireTime")),
        renewed=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
    )


def lease_manifest(
    record: LeaseRecord,
    *,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    owner_reference: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The whole Lease object for a create or a conditional replace."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if record.version:
        metadata["resourceVersion"] = record.version
    if owner_reference is not None:
        metadata["ownerReferences"] = [dict(owner_reference)]
    spec: dict[str, Any] = {
        "leaseDurationSeconds": record.duration_s,
        "leaseTransitions": record.transitions,
    }
    if record.holder:
        spec["holderIdentity"] = record.holder
    if record.acquired is not None:
        spec["acquireTime"] = micro_time(record.acquired)
    if record.renewed is not None:
        spec["renewTime"] = micro_time(record.renewed)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


class KubeLeaseStore:
    """`LeaseStore` on a Lease object, through the (synchronous) kube client in a thread.

    The Lease carries an owner reference to the AirflowAssetSync (not a controller one, no
    ``blockOwnerDeletion``: those would need more rights), so it goes with the sync.
    """

    def __init__(
        self,
        api: LeaseApi,
        *,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        owner_reference: Mapping[str, Any] | None = None,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self._labels = dict(labels)
        self._owner_reference = owner_reference

    def _body(self, record: LeaseRecord) -> dict[str, Any]:
        return lease_manifest(
            record,
            namespace=self._namespace,
            name=self._name,
            labels=self._labels,
            owner_reference=self._owner_reference,
        )

    async def get(self) -> LeaseRecord | None:
        body = await asyncio.to_thread(
            self._api.get_lease, namespace=self._namespace, name=self._name
        )
        return None if body is None else record_from_manifest(body)

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        return await self._write(self._api.create_lease, replace(record, version=""))

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        return await self._write(self._api.replace_lease, record)

    async def _write(
        self, call: Callable[[dict[str, Any]], dict[str, Any]], record: LeaseRecord
    ) -> LeaseRecord:
        try:
            stored = await asyncio.to_thread(call, self._body(record))
        except Exception as exc:
            # 409: exists / changed since our version; 404: deleted under us (read again).
            if getattr(exc, "status", None) in (404, 409):
                raise LeaseConflict(str(exc)) from exc
            raise
        return record_from_manifest(stored)
