"""The Kafka transport against a real broker: fan-out, offsets, foreign messages, outages.

Each test gets its own topic (``kafka_topic``) on the session's broker. Waiting is always
"poll until a condition holds or a deadline passes", never a bare sleep.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient

from airflow_asset_sync.api.events import SCHEMA, Envelope, SourceEvent
from airflow_asset_sync.api.spec import Kafka, KafkaSasl, KafkaSecurity, ObjectRef
from airflow_asset_sync.api.transport import Delivery, Publisher, Subscription
from airflow_asset_sync.clients.kafka.errors import (
    KafkaAuthError,
    KafkaConfigError,
    KafkaRejected,
    KafkaTransportError,
    KafkaUnavailable,
)
from airflow_asset_sync.clients.kafka.naming import default_topic, group_id
from airflow_asset_sync.clients.kafka.publisher import KafkaPublisher
from airflow_asset_sync.clients.kafka.settings import KafkaSettings
from airflow_asset_sync.clients.kafka.subscription import KafkaSubscription
from rig.kafka import KafkaBroker

SYNC = ObjectRef(namespace="team-a", name="migration")
ORIGIN = "http://airflow-2.example:8080"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def envelope(event_id: int, uri: str = "s3://bucket/a", origin: str = ORIGIN) -> Envelope:
    event = SourceEvent(
        id=event_id,
        uri=uri,
        extra={"n": event_id},
        timestamp=T0 + timedelta(seconds=event_id),
        source_dag_id="producer",
    )
    return Envelope(sync=str(SYNC), origin=origin, event=event)


def ids(deliveries: list[Delivery]) -> list[int | None]:
    return [d.envelope.event.id if d.envelope else None for d in deliveries]


async def take(sub: KafkaSubscription, count: int, timeout_s: float = 30.0) -> list[Delivery]:
    """Exactly ``count`` deliveries (never more: max_records is capped), or fail at the deadline."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {ids(got)} of {count} deliveries arrived"
        got += await sub.fetch(count - len(got), timeout_s=0.5)
    return got


async def until(condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Await ``condition()`` until truthy; retriable errors mean "not yet", others fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await condition()
            if result:
                return result
        except KafkaTransportError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.2)


@pytest.fixture
def settings(kafka: KafkaBroker, kafka_topic: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=(kafka.bootstrap,), topic=kafka_topic)


@pytest.fixture
async def publisher(settings: KafkaSettings) -> AsyncIterator[KafkaPublisher]:
    pub = KafkaPublisher(settings)
    await pub.start()
    yield pub
    await pub.stop()


@pytest.fixture
async def subscriptions(
    settings: KafkaSettings,
) -> AsyncIterator[Callable[[str], KafkaSubscription]]:
    """Make started subscriptions for a target name; all are stopped at teardown."""
    made: list[KafkaSubscription] = []

    # A group of this test's own: static members outlive a stop (see `static_member_id`),
    # and the next test's member of the same group, on its own topic, would wait them out.
    sync = ObjectRef(namespace="team-a", name=settings.topic[:200])

    def make(target: str) -> KafkaSubscription:
        sub = KafkaSubscription(settings, sync=sync, target=target)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        await sub.stop()


# -- no broker needed ---------------------------------------------------------------------


def test_names_and_protocol_conformance() -> None:
    assert default_topic(SYNC) == "airflow-asset-sync.team-a.migration"
    assert group_id(SYNC, "v3") == "airflow-asset-sync.team-a.migration.v3"
    long = ObjectRef(namespace="n" * 63, name="x" * 253)
    assert len(default_topic(long)) == 249
    assert default_topic(long) != default_topic(ObjectRef(namespace="n" * 63, name="x" * 252))
    settings = KafkaSettings(bootstrap_servers=("127.0.0.1:1",), topic="t")
    # The annotations are the check that the classes satisfy the worker's protocols: mypy
    # (`make lint`) refuses them otherwise. What runs here is the group the target consumes in.
    pub: Publisher = KafkaPublisher(settings)
    sub: Subscription = KafkaSubscription(settings, sync=SYNC, target="a")
    assert isinstance(sub, KafkaSubscription) and sub.group_id == group_id(SYNC, "a")
    del pub


def test_settings_from_spec_and_validation(tmp_path: Any) -> None:
    spec = Kafka(
        bootstrap_servers=["k1:9093"],
        security=KafkaSecurity(
            protocol="SASL_SSL", sasl=KafkaSasl(mechanism="PLAIN", secret_name="kafka-creds")
        ),
    )
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate")
    settings = KafkaSettings.from_spec(
        spec, SYNC, sasl_username="svc", sasl_password="hunter2-secret", ca_file=ca
    )
    assert settings.topic == default_topic(SYNC)
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in settings.describe()
    with pytest.raises(KafkaConfigError, match="CA file"):
        settings.client_kwargs("producer")  # the CA file does not parse
    with pytest.raises(KafkaConfigError, match="needs a SASL mechanism"):
        KafkaSettings.from_spec(spec, SYNC, ca_file=ca)
    with pytest.raises(KafkaConfigError, match="does not exist"):
        KafkaSettings.from_spec(
            spec, SYNC, sasl_username="u", sasl_password="p", ca_file=ca.with_name("nope")
        )


def test_errors_are_typed_and_scrubbed() -> None:
    settings = KafkaSettings(
        bootstrap_servers=("k:9092",),
        topic="t",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password="hunter2-secret",
    )
    cases: list[tuple[BaseException, type[KafkaTransportError], bool]] = [
        (kerr.KafkaConnectionError("down"), KafkaUnavailable, True),
        (kerr.NotLeaderForPartitionError(), KafkaUnavailable, True),
        (kerr.CommitFailedError("rebalanced"), KafkaUnavailable, True),
        (kerr.TopicAuthorizationFailedError(), KafkaAuthError, False),
        (kerr.SaslAuthenticationFailed("bad hunter2-secret"), KafkaAuthError, False),
        (kerr.MessageSizeTooLargeError(), KafkaRejected, False),
        (kerr.InvalidReplicationFactorError(), KafkaConfigError, False),
    ]
    for cause, kind, retriable in cases:
        error = settings.error("kafka: doing things", cause)
        assert type(error) is kind, cause
        assert error.retriable is retriable
        assert "hunter2-secret" not in str(error)
        assert str(error).startswith("kafka: doing things: ")
    with pytest.raises(KafkaConfigError, match="CA Secret 'kafka-ca'"):
        KafkaSettings.from_spec(
            Kafka(
                bootstrap_servers=["k:9093"],
                security=KafkaSecurity(protocol="SSL", ca_secret_name="kafka-ca"),
            ),
            SYNC,
        )


async def test_unreachable_broker_is_retriable_and_leaks_no_password(tmp_path: Any) -> None:
    from rig.procs import free_port

    settings = KafkaSettings(
        bootstrap_servers=(f"127.0.0.1:{free_port()}",),
        topic="t",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="hunter2-secret",
        request_timeout_ms=2000,
    )
    pub = KafkaPublisher(settings)
    with pytest.raises(KafkaUnavailable) as caught:
        await pub.start()
    assert caught.value.retriable
    assert caught.value.__cause__ is not None
    assert "hunter2-secret" not in str(caught.value)
    await pub.stop()


# -- against the rig's broker -------------------------------------------------------------


@pytest.mark.rig
async def test_publish_fans_out_to_every_target_in_order(
    kafka: KafkaBroker,
    settings: KafkaSettings,
    publisher: KafkaPublisher,
    subscriptions: Callable[[str], KafkaSubscription],
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:  # created by the publisher (auto-create is off in the rig), with one partition
        [topic] = await admin.describe_topics([settings.topic])
        assert len(topic["partitions"]) == 1
    finally:
        await admin.close()

    sent = [envelope(i, uri=f"s3://bucket/{'ab'[i % 2]}") for i in range(1, 9)]
    await publisher.publish(sent[:5])
    await publisher.publish(sent[5:])
    await publisher.publish([])  # a no-op, not an error

    a, b = subscriptions("a"), subscriptions("b")
    await a.start()
    await b.start()
    await a.start()  # idempotent
    for sub in (a, b):
        got = await take(sub, 8)
        assert [d.envelope for d in got] == sent
        assert all(d.problem is None for d in got)
        assert [d.position for d in got] == [(0, i) for i in range(8)]
        assert await sub.fetch(10, timeout_s=0.3) == []

    reader = AIOKafkaConsumer(
        settings.topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        record = await asyncio.wait_for(reader.getone(), 10)
        assert record.key == b"s3://bucket/b"
        assert list(record.headers) == [("schema-version", b"1")]
    finally:
        await reader.stop()


@pytest.mark.rig
async def test_commit_then_a_new_member_resumes_after_it(
    publisher: KafkaPublisher, subscriptions: Callable[[str], KafkaSubscription]
) -> None:
    await publisher.publish([envelope(i) for i in range(1, 6)])
    first = subscriptions("v3")
    await first.start()
    got = await take(first, 3)
    assert ids(got) == [1, 2, 3]
    await first.commit(got)
    await first.commit([])  # nothing to do
    await first.stop()
    await first.stop()  # idempotent

    second = subscriptions("v3")
    await second.start()
    assert ids(await take(second, 2)) == [4, 5]
    assert await second.fetch(10, timeout_s=0.3) == []


@pytest.mark.rig
async def test_uncommitted_deliveries_are_redelivered_after_restart(
    publisher: KafkaPublisher, subscriptions: Callable[[str], KafkaSubscription]
) -> None:
    await publisher.publish([envelope(i) for i in range(1, 5)])
    first = subscriptions("v3")
    await first.start()
    got = await take(first, 4)
    # Commit out of order: the highest position per partition is what counts.
    await first.commit([got[1], got[0]])
    await first.stop()  # a crash before the replayer wrote 3 and 4

    second = subscriptions("v3")
    await second.start()
    assert ids(await take(second, 2)) == [3, 4]
    assert await second.fetch(10, timeout_s=0.3) == []


@pytest.mark.rig
async def test_foreign_messages_become_problems_and_the_stream_goes_on(
    kafka: KafkaBroker,
    settings: KafkaSettings,
    publisher: KafkaPublisher,
    subscriptions: Callable[[str], KafkaSubscription],
) -> None:
    await publisher.publish([envelope(1)])
    future = json.loads(envelope(2).to_bytes()) | {"version": 99}
    raw = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await raw.start()
    try:
        await raw.send_and_wait(settings.topic, b"\x00\x01 not json", key=b"x")
        await raw.send_and_wait(settings.topic, json.dumps(future).encode(), key=b"y")
        await raw.send_and_wait(settings.topic, json.dumps({"schema": "other"}).encode())
        await raw.send_and_wait(settings.topic, None, key=b"tombstone")
        assert future["schema"] == SCHEMA
    finally:
        await raw.stop()
    await publisher.publish([envelope(3)])

    sub = subscriptions("v3")
    await sub.start()
    got = await take(sub, 6)
    assert ids(got) == [1, None, None, None, None, 3]
    assert [d.problem for d in got] == [
        None,
        "not JSON",
        "unknown schema version 99",
        "not an airflow-asset-sync event",
        "empty message",
        None,
    ]
    await sub.commit(got)
    assert await sub.fetch(10, timeout_s=0.3) == []


@pytest.mark.rig
async def test_published_keys_finds_what_a_crashed_publisher_sent(
    settings: KafkaSettings, publisher: KafkaPublisher
) -> None:
    await publisher.publish([envelope(i) for i in range(1, 6)])
    await publisher.publish([envelope(100, origin="http://other")])
    # The poller crashed before saving its checkpoint: a new worker, a new publisher.
    restarted = KafkaPublisher(settings)
    await restarted.start()
    try:
        assert await restarted.published_keys(ORIGIN) == {1, 2, 3, 4, 5}
        assert await restarted.published_keys("http://other") == {100}
        assert await restarted.published_keys("http://unknown") == set()
    finally:
        await restarted.stop()
    tail = KafkaPublisher(
        KafkaSettings(
            bootstrap_servers=settings.bootstrap_servers,
            topic=settings.topic,
            published_keys_tail_records=3,
        )
    )
    await tail.start()
    try:  # only the newest 3 records: ids 4, 5 and the other origin's 100
        assert await tail.published_keys(ORIGIN) == {4, 5}
    finally:
        await tail.stop()


@pytest.mark.rig
async def test_broker_restart_loses_nothing(
    kafka: KafkaBroker,
    settings: KafkaSettings,
    publisher: KafkaPublisher,
    subscriptions: Callable[[str], KafkaSubscription],
) -> None:
    sub = subscriptions("v3")
    await sub.start()
    await publisher.publish([envelope(1), envelope(2)])
    before = await take(sub, 2)
    await sub.commit(before)

    down_at = time.monotonic()
    await asyncio.to_thread(kafka.stop)
    try:
        publishing = asyncio.create_task(publisher.publish([envelope(i) for i in (3, 4, 5)]))
        # The broker is down: publish must wait (not report success) for the whole outage.
        done, _ = await asyncio.wait({publishing}, timeout=2.0)
        assert not done, "publish returned while the broker was down"
    finally:
        await asyncio.to_thread(kafka.start)
    await asyncio.wait_for(publishing, timeout=60)  # acknowledged once the broker is back
    print(f"publish acknowledged {time.monotonic() - down_at:.1f}s after the broker went down")

    after = await take(sub, 3, timeout_s=60)
    assert ids(after) == [3, 4, 5]
    await until(lambda: _commit(sub, after))
    restarted = KafkaPublisher(settings)
    await restarted.start()
    try:
        assert await restarted.published_keys(ORIGIN) == {1, 2, 3, 4, 5}
    finally:
        await restarted.stop()
    # The producer was not replaced: no duplicate records (the topic holds exactly five).
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await reader.start()
    try:
        tp = TopicPartition(settings.topic, 0)
        assert (await reader.end_offsets([tp]))[tp] == 5
    finally:
        await reader.stop()


async def _commit(sub: KafkaSubscription, deliveries: list[Delivery]) -> bool:
    await sub.commit(deliveries)
    return True


# -- static membership ------------------------------------------------------------------------

#: A member that fetches and commits 3 deliveries, says so, then keeps its session alive
#: until it is killed (SIGKILL: no LeaveGroup, exactly like a crashed worker pod).
_MEMBER = """
import asyncio, sys
from airflow_asset_sync.api.spec import ObjectRef
from airflow_asset_sync.clients.kafka.settings import KafkaSettings
from airflow_asset_sync.clients.kafka.subscription import KafkaSubscription

async def main(bootstrap, topic, session_ms):
    settings = KafkaSettings(bootstrap_servers=(bootstrap,), topic=topic,
                             session_timeout_ms=int(session_ms))
    sub = KafkaSubscription(settings, sync=ObjectRef(namespace="team-a", name=topic[:200]),
                            target="v3")
    await sub.start()
    got = []
    while len(got) < 3:
        got += await sub.fetch(3 - len(got), timeout_s=0.5)
    await sub.commit(got)
    print("committed", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""

#: Longer than the test may take: a new member that had to wait for the killed one's
#: session to expire would fail it.
SESSION_MS = 90_000


@pytest.mark.rig
async def test_a_killed_member_is_replaced_at_once_not_after_its_session(
    kafka: KafkaBroker, settings: KafkaSettings, publisher: KafkaPublisher
) -> None:
    """Static membership: the restarted worker takes the dead one's place without a
    rebalance. With dynamic membership the new member's join waits until the broker drops the
    killed one, `SESSION_MS` later, and `take` below fails at its deadline."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    await publisher.publish([envelope(i) for i in range(1, 7)])
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root / 'operator'}"}
    member = subprocess.Popen(
        [sys.executable, "-c", _MEMBER, kafka.bootstrap, settings.topic, str(SESSION_MS)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert member.stdout is not None
        assert member.stdout.readline().strip() == "committed"
    finally:
        member.send_signal(signal.SIGKILL)
        member.wait(timeout=10)
        if member.stdout is not None:
            member.stdout.close()

    member_sync = ObjectRef(namespace="team-a", name=settings.topic[:200])
    slow = KafkaSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic,
        session_timeout_ms=SESSION_MS,
    )
    replacement = KafkaSubscription(slow, sync=member_sync, target="v3")
    started = time.monotonic()
    try:
        await replacement.start()
        got = await take(replacement, 3, timeout_s=SESSION_MS / 3000)
        resumed_s = time.monotonic() - started
    finally:
        await replacement.stop()
    assert ids(got) == [4, 5, 6]
    # Not a speed target (the benchmark has those): joining blocks in `start` until the broker
    # settles the group, which without static membership means the killed member's whole
    # session; a third of it is a margin no healthy broker comes near.
    assert resumed_s < SESSION_MS / 3000, f"resumed only after {resumed_s:.1f} s"
    print(f"[kafka] resumed {resumed_s:.2f} s after the kill (session {SESSION_MS / 1000:.0f} s)")


@pytest.mark.rig
async def test_two_consumers_with_the_same_member_id_lose_nothing(
    publisher: KafkaPublisher, subscriptions: Callable[[str], KafkaSubscription]
) -> None:
    """Two workers of one sync at once (a mistake the Lease prevents in a cluster): they fence
    each other, commits fail and records come again, but every record reaches one of them;
    the replayer's marker dedup absorbs the repeats."""
    first, second = subscriptions("v3"), subscriptions("v3")
    await first.start()
    seen: set[int | None] = set()
    stop = asyncio.Event()

    async def consume(sub: KafkaSubscription) -> None:
        while not stop.is_set():
            try:
                got = await sub.fetch(20, timeout_s=0.3)
                seen.update(ids(got))
                await sub.commit(got)
            except KafkaTransportError:
                await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(consume(first))]
    await publisher.publish([envelope(i) for i in range(1, 21)])
    await second.start()
    tasks.append(asyncio.create_task(consume(second)))
    await publisher.publish([envelope(i) for i in range(21, 41)])
    started = time.monotonic()
    try:
        await until(lambda: _all_seen(seen, 40), timeout_s=90)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"[kafka] all 40 seen {time.monotonic() - started:.1f} s after the second member")
    assert set(range(1, 41)) <= seen


async def _all_seen(seen: set[int | None], count: int) -> bool:
    return set(range(1, count + 1)) <= seen
