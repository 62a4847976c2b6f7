"""The Kafka transport: an idempotent publisher and one consumer group per target (aiokafka).

This is the only module that imports aiokafka. Everything aiokafka raises leaves it wrapped
in a `KafkaTransportError` subclass, with the original chained as ``__cause__`` and a
``retriable`` class attribute the worker uses to choose between back-off and giving up.

Why these choices:

- **Key = asset URI.** Kafka keeps order per partition and the default partitioner maps a key
  to one partition, so the events of one asset stay in source order however many partitions
  the topic has. The topic is created with **one partition** by default anyway: one consumer
  per target reads it (the worker runs one replica), so more partitions buy no parallelism,
  while one partition keeps the replay order equal to the publish order across assets too,
  and asset events (a few per second at most) are far below what one partition carries.
- **Idempotent producer, acks=all.** `publish` returns only when every record is on all
  in-sync replicas, which is the promise the poller's checkpoint relies on
  (`api.transport`); idempotence keeps the producer's own retries from writing duplicates.
- **Manual commits, earliest reset.** A target's group offset moves only after the replayer
  wrote the event, so a crash redelivers instead of losing. See `KafkaSubscription`.

Credentials reach this module as plain values (the worker reads them from env populated from
Secrets). They are never logged: `KafkaSettings` hides the password from its repr and every
error message is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from airflow_asset_sync.api.events import SCHEMA_VERSION, Envelope, UnknownMessage
from airflow_asset_sync.api.spec import Kafka, ObjectRef
from airflow_asset_sync.api.transport import Delivery

log = logging.getLogger(__name__)

#: Prefix of the default topic name and of every consumer group id.
NAME_PREFIX = "airflow-asset-sync"
#: Header naming the envelope schema version, so tools can route without parsing the value.
SCHEMA_VERSION_HEADER = "schema-version"
#: Kafka's limit on topic names.
MAX_TOPIC_LENGTH = 249

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


# -- errors -------------------------------------------------------------------------------


class KafkaTransportError(Exception):
    """Kafka could not do what was asked. Not retriable unless a subclass says so."""

    retriable: ClassVar[bool] = False


class KafkaUnavailable(KafkaTransportError):
    """The cluster is unreachable, timed out or is moving leaders: retry with back-off."""

    retriable = True


class KafkaAuthError(KafkaTransportError):
    """Authentication or authorization failed: retrying will not help until config changes."""


class KafkaConfigError(KafkaTransportError):
    """The settings are invalid (missing CA file, SASL without credentials, bad topic...)."""


class KafkaRejected(KafkaTransportError):
    """The broker refused a request for good (record too large, invalid record...)."""


_AUTH_ERRORS: tuple[type[BaseException], ...] = (
    kerr.AuthenticationFailedError,
    kerr.AuthenticationMethodNotSupported,
    kerr.SaslAuthenticationFailed,
    kerr.UnsupportedSaslMechanismError,
    kerr.IllegalSaslStateError,
    kerr.TopicAuthorizationFailedError,
    kerr.GroupAuthorizationFailedError,
    kerr.ClusterAuthorizationFailedError,
    kerr.TransactionalIdAuthorizationFailed,
)
_CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    kerr.KafkaConfigurationError,
    kerr.InvalidTopicError,
    kerr.InvalidPartitionsError,
    kerr.InvalidReplicationFactorError,
    kerr.InvalidConfigurationError,
    kerr.PolicyViolationError,
    kerr.IncompatibleBrokerVersion,
    kerr.UnsupportedVersionError,
    ssl.SSLError,
    ValueError,
)
#: Not flagged retriable by aiokafka, but transient for us: a timeout or a rebalance means
#: "try again" (uncommitted deliveries are redelivered and the replayer deduplicates).
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    kerr.KafkaTimeoutError,
    kerr.KafkaConnectionError,
    kerr.KafkaUnavailableError,
    kerr.BrokerNotAvailableError,
    kerr.CommitFailedError,
    kerr.RebalanceInProgressError,
    kerr.IllegalGenerationError,
    kerr.UnknownMemberIdError,
    kerr.OutOfOrderSequenceNumber,
    kerr.UnknownProducerId,
    kerr.ProducerClosed,
    asyncio.TimeoutError,
    ConnectionError,
)


def _error_class(exc: BaseException) -> type[KafkaTransportError]:
    if isinstance(exc, KafkaTransportError):
        return type(exc)
    if isinstance(exc, _AUTH_ERRORS):
        return KafkaAuthError
    if isinstance(exc, _TRANSIENT_ERRORS) or getattr(exc, "retriable", False):
        return KafkaUnavailable
    if isinstance(exc, _CONFIG_ERRORS):
        return KafkaConfigError
    if isinstance(exc, kerr.KafkaError):
        return KafkaRejected
    return KafkaTransportError


# -- settings -----------------------------------------------------------------------------


def default_topic(sync: ObjectRef) -> str:
    """``airflow-asset-sync.<namespace>.<name>``: one topic per sync, readable in Kafka tools.

    Kubernetes names fit Kafka's topic alphabet; the rare name too long for Kafka's 249
    characters is cut and suffixed with a digest, so distinct syncs never share a topic.
    """
    topic = f"{NAME_PREFIX}.{sync.namespace}.{sync.name}"
    if len(topic) <= MAX_TOPIC_LENGTH:
        return topic
    digest = hashlib.sha256(topic.encode()).hexdigest()[:12]
    return f"{topic[: MAX_TOPIC_LENGTH - 13]}-{digest}"


def static_member_id(topic: str) -> str:
    """The static member id of the one consumer in a group (`KafkaSettings.static_membership`).

    Static members do not leave their group on close: the next start with the same id takes
    the partitions back without a rebalance. The topic is part of the id: a member that
    rejoined under its old id after `spec.kafka.topic` changed would be handed the old
    topic's partitions (aiokafka fails on that); under a new id it waits once, at most the
    session timeout, for the old member to expire.
    """
    digest = hashlib.sha256(topic.encode()).hexdigest()[:12]
    return f"{NAME_PREFIX}-worker-{digest}"


def group_id(sync: ObjectRef, target: str) -> str:
    """One consumer group per (sync, target): a slow target never holds back another."""
    return f"{NAME_PREFIX}.{sync.namespace}.{sync.name}.{target}"


@dataclass(frozen=True)
class KafkaSettings:
    """Everything needed to reach the topic, with secrets as plain values.

    Timeouts are in their unit's name. Defaults suit a cluster a few milliseconds away:
    ``request_timeout_ms`` also bounds how long an unacknowledged record is retried (aiokafka
    has no separate delivery timeout), so a broker outage shorter than it costs nothing but
    latency; a longer one fails `publish` with `KafkaUnavailable` and the poller retries.
    """

    bootstrap_servers: tuple[str, ...]
    topic: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    client_id: str = NAME_PREFIX
    request_timeout_ms: int = 30_000
    retry_backoff_ms: int = 200
    #: How soon clients notice new partitions or a moved leader without an error to prompt it.
    metadata_max_age_ms: int = 60_000
    #: Partitions for a topic this module creates (see the module docstring for why 1).
    topic_partitions: int = 1
    #: Replication factor for a created topic; None = min(3, brokers in the cluster).
    topic_replication_factor: int | None = None
    #: How many of the newest records per partition `published_keys` reads. A restarted
    #: poller re-reads at most its overlap window plus one unconfirmed batch (a few pages of
    #: at most 100 events); 1000 covers that with room to spare and reads in well under 1 s.
    published_keys_tail_records: int = 1000
    published_keys_timeout_s: float = 30.0
    #: A consumer that does not fetch for this long is dropped from its group (then rejoins
    #: and gets its uncommitted records again). Long enough for a replayer's back-off.
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 10_000
    #: Static group membership (KIP-345): each consumer joins as `static_member_id`, so a
    #: restarted worker takes its partitions back at once instead of waiting out the dead
    #: member's session (measured on the rig's broker: 9.9 s without, 0.3 s with). One worker
    #: consumes per group (one per sync and target, behind the sync's Lease), so one id is
    #: enough. False: dynamic membership (each start is a new member).
    static_membership: bool = True

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise KafkaConfigError("kafka: no bootstrap servers")
        if not self.topic or len(self.topic) > MAX_TOPIC_LENGTH:
            raise KafkaConfigError(f"kafka: invalid topic name {self.topic!r}")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise KafkaConfigError(
                f"kafka: security protocol {self.security_protocol} needs a SASL mechanism, "
                "username and password"
            )
        if not sasl and self.sasl_mechanism is not None:
            raise KafkaConfigError(
                f"kafka: SASL is configured but the security protocol is "
                f"{self.security_protocol}; use SASL_PLAINTEXT or SASL_SSL"
            )
        if self.ca_file is not None and not self.uses_tls:
            raise KafkaConfigError(
                f"kafka: a CA file is set but the security protocol {self.security_protocol} "
                "does not use TLS; use SSL or SASL_SSL"
            )
        if self.ca_file is not None and not self.ca_file.is_file():
            raise KafkaConfigError(f"kafka: CA file {self.ca_file} does not exist")
        if self.topic_partitions < 1:
            raise KafkaConfigError("kafka: topic_partitions must be at least 1")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_spec(
        cls,
        spec: Kafka,
        sync: ObjectRef,
        *,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        ca_file: Path | None = None,
        **overrides: Any,
    ) -> KafkaSettings:
        """Settings for a sync's `spec.kafka`; Secret values are resolved by the caller.

        The spec names Secrets (by reference, never values); the worker gets their contents
        as env vars or a mounted CA file and passes them here.
        """
        security = spec.security
        protocol: SecurityProtocol = security.protocol if security else "PLAINTEXT"
        mechanism: SaslMechanism | None = None
        if security is not None and security.sasl is not None:
            mechanism = security.sasl.mechanism
        if security is not None and security.ca_secret_name and ca_file is None:
            # Falling back to the system trust store would fail later, as a TLS error.
            raise KafkaConfigError(
                f"kafka: the spec names CA Secret {security.ca_secret_name!r} but no CA file "
                "was given"
            )
        return cls(
            bootstrap_servers=tuple(spec.bootstrap_servers),
            topic=spec.topic or default_topic(sync),
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=sasl_username if mechanism else None,
            sasl_password=sasl_password if mechanism else None,
            ca_file=ca_file,
            **overrides,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Verify the broker against the given CA file, or the system trust store."""
        try:
            return ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaConfigError(f"kafka: cannot load CA file {self.ca_file}: {exc}") from exc

    def client_kwargs(self, role: str) -> dict[str, Any]:
        """Connection arguments shared by aiokafka's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": f"{self.client_id}-{role}",
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    def error(self, what: str, exc: BaseException) -> KafkaTransportError:
        """Wrap ``exc`` in the matching typed error; the password never reaches the message."""
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.sasl_password:
            detail = detail.replace(self.sasl_password, "***")
        return _error_class(exc)(f"{what}: {detail}")

    def describe(self) -> str:
        """For logs: where and how, without credentials."""
        return (
            f"topic={self.topic} bootstrap={','.join(self.bootstrap_servers)} "
            f"security={self.security_protocol}"
            + (f"/{self.sasl_mechanism}" if self.sasl_mechanism else "")
        )


async def ensure_topic(settings: KafkaSettings) -> bool:
    """Create the topic unless it exists; True if this call created it.

    Existence is checked first (a plain metadata read), so a cluster where a platform team
    pre-creates topics and denies CreateTopics to applications works without extra rights.
    Without an explicit replication factor it is min(3, number of brokers): durable on a
    real cluster, still valid on a single-broker development setup.
    """
    admin = AIOKafkaAdminClient(**settings.client_kwargs("admin"))
    try:
        await admin.start()
        if settings.topic in await admin.list_topics():
            return False
        replication = settings.topic_replication_factor
        if replication is None:
            cluster = await admin.describe_cluster()
            replication = max(1, min(3, len(cluster.get("brokers") or [])))
        response = await admin.create_topics(
            [NewTopic(settings.topic, settings.topic_partitions, replication)],
            timeout_ms=settings.request_timeout_ms,
        )
        for topic_error in response.topic_errors:
            code, message = topic_error[1], (topic_error[2] if len(topic_error) > 2 else None)
            if code in (0, kerr.TopicAlreadyExistsError.errno):
                continue
            raise kerr.for_code(code)(message or f"creating topic {settings.topic!r}")
        log.info(
            "created kafka topic %s (%d partitions, replication %d)",
            settings.topic,
            settings.topic_partitions,
            replication,
        )
        return True
    except (TimeoutError, kerr.KafkaError, OSError, ValueError) as exc:
        raise settings.error(f"kafka: cannot ensure topic {settings.topic!r} exists", exc) from exc
    finally:
        await admin.close()


# -- publisher ----------------------------------------------------------------------------


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
                        envelope = _parse(record.value)[0]
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


# -- subscription -------------------------------------------------------------------------


def _parse(value: bytes | None) -> tuple[Envelope | None, str | None]:
    if value is None:
        return None, "empty message"
    try:
        return Envelope.from_bytes(value), None
    except UnknownMessage as exc:
        return None, str(exc)


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
                envelope, problem = _parse(record.value)
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
