"""`KafkaPublisher`: the `api.transport.Publisher` on Kafka.

`publish` returns only when every record is on all in-sync replicas (the promise the poller's
checkpoint relies on); records are keyed by asset URI. The package docstring says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kerr

from airflow_asset_sync.api.events import SCHEMA_VERSION, Envelope
from airflow_asset_sync.clients.kafka.admin import ensure_topic
from airflow_asset_sync.clients.kafka.errors import KafkaTransportError, KafkaUnavailable
from airflow_asset_sync.clients.kafka.records import SCHEMA_VERSION_HEADER, parse
from airflow_asset_sync.clients.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


class KafkaPublisher:
    """Publishes envelopes to the sync's topic and confirms each one is durable.

    An idempotent producer, with acks=all. After a failed `publish` the producer is replaced
    on the next call: a batch that expired unacknowledged leaves an idempotent producer with
    sequence numbers the broker may reject, and a fresh producer id starts clean (a possible
    duplicate from the failed attempt is what `published_keys` and the replayer's dedup are
    for).
    """

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 5) -> None:
        self.settings = settings
        #: Small, so a poll's events go out in one batch without adding visible latency.
        self.linger_ms = linger_ms
        self._producer: Any = None
        self._started = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._started:
                return
            await ensure_topic(self.settings)
            await self._open()
            self._started = True
            log.info("kafka publisher started: %s", self.settings.describe())

    async def _open(self) -> None:
        producer = AIOKafkaProducer(
            **self.settings.client_kwargs("producer"),
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
        )
        try:
            await producer.start()
        except BaseException as exc:
            await producer.stop()
            if isinstance(exc, Exception):
                raise self.settings.error("kafka: cannot start the producer", exc) from exc
            raise
        self._producer = producer

    async def stop(self) -> None:
        async with self._lock:
            self._started = False
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.stop()

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Send all envelopes; return once every one is acknowledged by all in-sync replicas.

        Raises a `KafkaTransportError` naming how many failed if any did; the caller must
        then treat the whole batch as not published (the idempotent producer plus the
        replayer's dedup absorb what did get through).
        """
        if not envelopes:
            return
        async with self._lock:
            if not self._started:
                raise KafkaTransportError("kafka: publisher is not started")
            if self._producer is None:
                await self._open()
            producer = self._producer
            topic = self.settings.topic
            headers = [(SCHEMA_VERSION_HEADER, str(SCHEMA_VERSION).encode())]
            futures: list[asyncio.Future[Any]] = []
            failure: BaseException | None = None
            for envelope in envelopes:
                try:
                    futures.append(
                        await producer.send(
                            topic,
                            value=envelope.to_bytes(),
                            key=envelope.event.uri.encode(),
                            headers=headers,
                        )
                    )
                except Exception as exc:
                    failure = exc
                    break
            # Settle what was queued before reporting, so no future is left un-awaited.
            results = await asyncio.gather(*futures, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if failure is not None:
                errors.append(failure)
            if not errors:
                return
            self._producer = None
            await producer.stop()
            unsent = len(envelopes) - len(futures)
            failed = len(errors) - (1 if failure is not None else 0) + unsent
            raise self.settings.error(
                f"kafka: {failed} of {len(envelopes)} events were not acknowledged by topic "
                f"{topic!r}",
                errors[0],
            ) from errors[0]

    async def published_keys(self, origin: str) -> set[int]:
        """Source event ids from ``origin`` among the newest records of every partition.

        Reads with a throwaway consumer without a group (no offsets committed, no rebalance
        of the targets' groups), from ``published_keys_tail_records`` before the end of each
        partition up to the end as it was when the call started.
        """
        settings = self.settings
        async with self._lock:
            if not self._started:
                raise KafkaTransportError("kafka: publisher is not started")
            if self._producer is None:
                await self._open()
            try:
                # The producer already holds the topic's metadata; a group-less consumer
                # only learns about topics it is assigned.
                partitions = await self._producer.partitions_for(settings.topic)
            except (TimeoutError, kerr.KafkaError, OSError) as exc:
                raise settings.error(
                    f"kafka: cannot read the partitions of topic {settings.topic!r}", exc
                ) from exc
        consumer = AIOKafkaConsumer(
            **settings.client_kwargs("tail-reader"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        ids: set[int] = set()
        try:
            await consumer.start()
            if not partitions:
                return ids
            tps = [TopicPartition(settings.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ends: Mapping[Any, int] = await consumer.end_offsets(tps)
            begins: Mapping[Any, int] = await consumer.beginning_offsets(tps)
            pending: dict[Any, int] = {}
            for tp in tps:
                start = max(begins[tp], ends[tp] - settings.published_keys_tail_records)
                if start < ends[tp]:
                    consumer.seek(tp, start)
                    pending[tp] = ends[tp]
            deadline = time.monotonic() + settings.published_keys_timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"kafka: reading the tail of topic {settings.topic!r} took longer "
                        f"than {settings.published_keys_timeout_s:.0f}s"
                    )
                batches = await consumer.getmany(*pending, timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= pending[tp]:
                            continue  # published after this call started
                        envelope = parse(record.value)[0]
                        if envelope is not None and envelope.origin == origin:
                            ids.add(envelope.event.id)
                # Positions, not record offsets: a control record can be the last offset.
                for tp in list(pending):
                    if await consumer.position(tp) >= pending[tp]:
                        del pending[tp]
            return ids
        except (TimeoutError, kerr.KafkaError, OSError) as exc:
            raise settings.error(
                f"kafka: cannot read the tail of topic {settings.topic!r}", exc
            ) from exc
        finally:
            await consumer.stop()
