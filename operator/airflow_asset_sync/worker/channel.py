"""An in-process stand-in for the Kafka topic, for standalone mode.

Same promise as Kafka, from the poller's side: `publish` returns only when the events are safe.
With Kafka "safe" means the broker acknowledged them; here there is no broker that survives a
crash, so "safe" means *every target committed them*. The source checkpoint therefore advances
only after every target has the event, and a crash at any point re-reads from the source.

Each target gets its own `Subscription` view with its own committed position, like a Kafka
consumer group per target; a (re)started subscription resumes after its last commit, so
deliveries fetched but not committed before a crash are delivered again.

Cost of that promise, stated: a slow or down target holds back the poller and therefore every
other target. That is acceptable for a local run; in a cluster, Kafka decouples targets.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from airflow_asset_sync.api.events import Envelope
from airflow_asset_sync.api.transport import Delivery

#: All deliveries share one partition: the channel is a single ordered log.
PARTITION = 0


class ChannelClosed(RuntimeError):
    """Publishing into, or waiting on, a channel that was stopped."""


class _Log:
    """One target's pending deliveries, from the first uncommitted one on."""

    def __init__(self) -> None:
        self.pending: deque[Delivery] = deque()
        self.committed = 0  # sequence number of the last committed delivery
        self.fetched = 0  # sequence number of the last delivery handed out


class InProcessChannel:
    """`Publisher` for the poller, plus one `Subscription` per target (`subscription(name)`)."""

    def __init__(self, *, targets: Sequence[str]) -> None:
        if not targets:
            raise ValueError("an in-process channel needs at least one target")
        self._logs = {name: _Log() for name in targets}
        self._seq = 0
        self._closed = False
        self._changed = asyncio.Condition()

    # -- Publisher ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Append to every target's log, then wait until every target committed all of them."""
        if not envelopes:
            return
        async with self._changed:
            if self._closed:
                raise ChannelClosed("channel stopped")
            for envelope in envelopes:
                self._seq += 1
                delivery = Delivery(envelope=envelope, position=(PARTITION, self._seq))
                for log in self._logs.values():
                    log.pending.append(delivery)
            last = self._seq
            self._changed.notify_all()
            await self._changed.wait_for(
                lambda: self._closed or all(log.committed >= last for log in self._logs.values())
            )
            if not all(log.committed >= last for log in self._logs.values()):
                raise ChannelClosed("channel stopped before every target committed")

    async def published_keys(self, origin: str) -> set[int]:
        """Always empty: nothing outlives the process, so nothing can have been published."""
        return set()

    async def stop(self) -> None:
        """Make a waiting `publish` fail (its events are then re-read from the source)."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    # -- Subscriptions -----------------------------------------------------------------------

    def subscription(self, target: str) -> ChannelSubscription:
        if target not in self._logs:
            raise KeyError(f"no target {target!r} in this channel")
        return ChannelSubscription(self, target)

    def committed(self, target: str) -> int:
        return self._logs[target].committed

    async def _fetch(self, target: str, max_records: int, timeout_s: float) -> list[Delivery]:
        log = self._logs[target]

        def available() -> bool:
            return any(d.position[1] > log.fetched for d in log.pending)

        async with self._changed:
            if not available():
                try:
                    await asyncio.wait_for(self._changed.wait_for(available), timeout_s)
                except TimeoutError:
                    return []
            batch = [d for d in log.pending if d.position[1] > log.fetched][:max_records]
            if batch:
                log.fetched = batch[-1].position[1]
            return batch

    async def _commit(self, target: str, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        log = self._logs[target]
        async with self._changed:
            log.committed = max(log.committed, max(d.position[1] for d in deliveries))
            while log.pending and log.pending[0].position[1] <= log.committed:
                log.pending.popleft()
            self._changed.notify_all()

    async def _restart(self, target: str) -> None:
        log = self._logs[target]
        async with self._changed:
            log.fetched = log.committed


class ChannelSubscription:
    """One target's view of the channel (the `Subscription` protocol)."""

    def __init__(self, channel: InProcessChannel, target: str) -> None:
        self._channel = channel
        self._target = target

    async def start(self) -> None:
        """Resume after the last commit: uncommitted deliveries come again (crash recovery)."""
        await self._channel._restart(self._target)

    async def fetch(self, max_records: int, timeout_s: float) -> list[Delivery]:
        return await self._channel._fetch(self._target, max_records, timeout_s)

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        await self._channel._commit(self._target, deliveries)

    async def stop(self) -> None:
        """Nothing to release; uncommitted deliveries stay pending for the next start."""
