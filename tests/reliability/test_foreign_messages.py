"""Messages on a sync's topic that are not ours: skipped, counted, and the stream goes on.

End to end on real parts: a sync from a real Airflow 3.3 to another through a real Kafka
topic, with a real event stream flowing, while the test writes garbage into that same topic
with its own producer: bytes that are not JSON, JSON that is not ours, our schema name with an
unknown version, our schema with an invalid event, an empty (tombstone) value, a large blob.

Each must be skipped and counted (``aas_events_skipped_total{reason="foreign"}`` and the
target's ``eventsSkipped``), and every real event must still land exactly once. A graceful
restart in the middle reads the topic's tail (the poller's `published_keys`) through the
garbage, as every start does.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from rig.airflow import AirflowInstance, AssetPool
from rig.kafka import KafkaBroker
from rig.sync import SyncProcess
from support import live
from support.stream import (
    EventStream,
    Verdict,
    await_verdict,
    delivery,
    kafka_sync,
    note,
    source_ids,
)

pytestmark = [pytest.mark.rig, pytest.mark.slow]

EVENTS = 600

#: (key, value) pairs that are not airflow-asset-sync events, each a different way.
GARBAGE: list[tuple[bytes | None, bytes | None]] = [
    (b"s3://aas-test/x", b"\x00\xff\x13 not json at all"),
    (None, b'{"hello": "world"}'),
    (b"k", b"[1, 2, 3]"),
    (
        b"k",
        json.dumps({"schema": "airflow-asset-sync/event", "version": 99, "sync": "a/b"}).encode(),
    ),
    (
        b"k",
        json.dumps({"schema": "airflow-asset-sync/event", "version": 1, "sync": "a/b"}).encode(),
    ),
    (
        b"k",
        json.dumps(
            {
                "schema": "airflow-asset-sync/event",
                "version": 1,
                "sync": "a/b",
                "origin": "x",
                "event": {"id": "12", "uri": 5, "timestamp": "yesterday"},
            }
        ).encode(),
    ),
    (b"tombstone", None),
    (b"big", b"<" + b"x" * 200_000 + b">"),
    (
        b"utf",
        '{"schema": "airflow-asset-sync/event", "version": 1, "\udc80": 1}'.encode(
            "utf-8", "surrogatepass"
        ),
    ),
]


def _write_garbage(bootstrap: str, topic: str, rounds: int = 1) -> int:
    async def produce() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(rounds):
                for key, value in GARBAGE:
                    await producer.send_and_wait(topic, value=value, key=key)
        finally:
            await producer.stop()
        return rounds * len(GARBAGE)

    return asyncio.run(produce())


def test_foreign_messages_mid_stream_are_skipped_counted_and_the_stream_goes_on(
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    started = time.monotonic()
    uris = assets.take(2)
    proc: SyncProcess = sync_runner(
        kafka_sync("foreign", airflow3, airflow3b, uris, kafka, kafka_topic)
    )

    def foreign() -> float:
        return proc.metric("aas_events_skipped_total", target="t", reason="foreign")

    stream = EventStream(airflow3, uris, total=EVENTS, rate=20.0, label="foreign").start()
    stream.wait_for(EVENTS // 4)
    first = _write_garbage(kafka.bootstrap, kafka_topic, rounds=2)
    live.wait_for(
        lambda: foreign() >= first, what=f"{first} foreign messages skipped", timeout_s=120
    )
    assert foreign() == first

    # A graceful restart: the new process reads the topic's tail, garbage and all.
    proc.server.kill(signal.SIGTERM)
    assert proc.server.proc is not None
    assert proc.server.proc.wait(timeout=60) == 0, proc.server.log_tail()
    assert proc.state()["targets"][0]["eventsSkipped"] == first
    proc.start()

    stream.wait_for(EVENTS * 3 // 4)
    second = _write_garbage(kafka.bootstrap, kafka_topic, rounds=1)
    live.wait_for(
        lambda: foreign() >= second, what=f"{second} more foreign messages skipped", timeout_s=120
    )
    stream.join()

    verdict = await_verdict(airflow3, airflow3b, uris, airflow3.url, timeout_s=180)
    assert foreign() == second  # this process's count: exactly the second batch
    proc.server.kill(signal.SIGTERM)
    assert proc.server.proc.wait(timeout=60) == 0, proc.server.log_tail()
    final = Verdict.of(source_ids(airflow3, uris), delivery(airflow3b, uris, airflow3.url))
    skipped = proc.state()["targets"][0]["eventsSkipped"]
    log = proc.log()
    note(
        "foreign-messages",
        events=final.expected,
        garbage_messages=first + second,
        skipped_in_status=skipped,
        lost=len(final.lost),
        duplicated=len(final.duplicated),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert skipped == first + second
    assert log.count("message is not an airflow-asset-sync event; skipped") == first + second
    assert "Traceback" not in log
    assert verdict.ok and final.ok, final.summary()
    assert final.expected >= EVENTS
