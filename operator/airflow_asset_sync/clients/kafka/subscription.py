"""`KafkaSubscription`: the `api.transport.Subscription` on Kafka, one consumer group per target."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kerr

from airflow_asset_sync.api.spec import ObjectRef
from airflow_asset_sync.api.transport import Delivery
from airflow_asset_sync.clients.kafka.admin import ensure_topic
from airflow_asset_sync.clients.kafka.errors import KafkaTransportError
from airflow_asset_sync.clients.kafka.naming import group_id, static_member_id
from airflow_asset_sync.clients.kafka.records import parse
from airflow_asset_sync.clients.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


class KafkaSubscription:
    """One target's consumer group on the sync's topic.

    - Offsets are committed only by `commit`, after the replayer wrote the events: a crash
      before that redelivers them (at least once); the replayer's marker dedup makes it once.
    - A new group starts at the **earliest** retained record. The poller publishes only what
      must be delivered (filters and ``startFrom`` are applied at the source), so anything in
      the topic is owed to every target; "latest" would silently drop what was published
      between the topic's creation and the replayer's first join. The cost: a target added
      to an existing sync receives the retained backlog (its dedup prevents duplicates).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        sync: ObjectRef,
        target: str,
    ) -> None:
        self.settings = settings
        self.group_id = group_id(sync, target)
        self._consumer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._consumer is not None:
                return
            # The subscription may start before the first publisher ever did.
            await ensure_topic(self.settings)
            consumer = AIOKafkaConsumer(
                self.settings.topic,
                **self.settings.client_kwargs("consumer"),
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_interval_ms=self.settings.max_poll_interval_ms,
                session_timeout_ms=self.settings.session_timeout_ms,
                group_instance_id=(
                    static_member_id(self.settings.topic)
                    if self.settings.static_membership
                    else None
                ),
            )
            try:
                await consumer.start()
            except BaseException as exc:
                await consumer.stop()
                if isinstance(exc, Exception):
                    raise self.settings.error(
                        f"kafka: cannot start consumer group {self.group_id!r}", exc
                    ) from exc
                raise
            self._consumer = consumer
            log.info(
                "kafka subscription started: group=%s %s", self.group_id, self.settings.describe()
            )

    async def stop(self) -> None:
        async with self._lock:
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await consumer.stop()

    def _require(self) -> Any:
        if self._consumer is None:
            raise KafkaTransportError(f"kafka: subscription {self.group_id!r} is not started")
        return self._consumer

    async def fetch(self, max_records: int, timeout_s: float) -> list[Delivery]:
        """Up to ``max_records`` next records, in partition order; [] after ``timeout_s``.

        A record that is not one of our envelopes (not JSON, unknown schema version, invalid)
        becomes a delivery with ``envelope=None`` and a ``problem``, so the replayer can count
        it and commit past it instead of stalling the stream.
        """
        consumer = self._require()
        try:
            batches = await consumer.getmany(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records
            )
        except (kerr.KafkaError, kerr.ConsumerStoppedError, OSError) as exc:
            raise self.settings.error(
                f"kafka: fetching for group {self.group_id!r} failed", exc
            ) from exc
        deliveries: list[Delivery] = []
        for tp in sorted(batches, key=lambda tp: tp.partition):
            for record in batches[tp]:
                envelope, problem = parse(record.value)
                deliveries.append(
                    Delivery(
                        envelope=envelope,
                        position=(record.partition, record.offset),
                        problem=problem,
                    )
                )
        return deliveries

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Commit, per partition, the offset after the highest delivered position."""
        if not deliveries:
            return
        consumer = self._require()
        highest: dict[int, int] = {}
        for delivery in deliveries:
            partition, offset = delivery.position
            highest[partition] = max(offset, highest.get(partition, -1))
        offsets = {
            TopicPartition(self.settings.topic, partition): offset + 1
            for partition, offset in highest.items()
        }
        try:
            await consumer.commit(offsets)
        except (TimeoutError, kerr.KafkaError, OSError) as exc:
            raise self.settings.error(
                f"kafka: committing offsets of group {self.group_id!r} failed", exc
            ) from exc
