"""The rig's Kafka broker is real and aiokafka speaks to it end to end.

Covers the paths the design leans on: topic creation through the admin client (auto-create
is off in the rig), produce with acks=all, a consumer group committing an offset, and a new
member of that group resuming right after the committed offset.
"""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rig.kafka import KafkaBroker

pytestmark = pytest.mark.rig


async def _take(consumer: AIOKafkaConsumer, count: int, timeout_s: float = 20.0) -> list[bytes]:
    """Exactly ``count`` message values, in order, or fail after ``timeout_s``."""
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count:
        assert time.monotonic() < deadline, f"got {values} of {count} messages"
        batches = await consumer.getmany(timeout_ms=500, max_records=count - len(values))
        for records in batches.values():
            values.extend(r.value for r in records if isinstance(r, ConsumerRecord))
    return values


async def test_create_produce_consume_commit_resume(kafka: KafkaBroker, kafka_topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(kafka_topic, 1, 1)])
        assert [(t[0], t[1]) for t in response.topic_errors] == [(kafka_topic, 0)]
        assert kafka_topic in await admin.list_topics()
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(5):
            meta = await producer.send_and_wait(kafka_topic, f"m{i}".encode(), key=b"k")
            assert (meta.partition, meta.offset) == (0, i)
    finally:
        await producer.stop()

    group = f"smoke-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(kafka_topic, 0)

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            kafka_topic,
            bootstrap_servers=kafka.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    first = consumer()
    await first.start()
    try:
        assert await _take(first, 3) == [b"m0", b"m1", b"m2"]
        await first.commit({tp: 3})
        assert await first.committed(tp) == 3
    finally:
        await first.stop()

    second = consumer()
    await second.start()
    try:
        assert await second.committed(tp) == 3
        assert await _take(second, 2) == [b"m3", b"m4"]
        assert await second.getmany(timeout_ms=300) == {}
    finally:
        await second.stop()
