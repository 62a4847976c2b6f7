"""`KafkaSettings`: how to reach the topic (servers, TLS, SASL, timeouts), from `spec.kafka`.

Credentials reach this module as plain values (the worker reads them from env populated from
Secrets). They are never logged: `KafkaSettings` hides the password from its repr and
`KafkaSettings.error` scrubs it from every error message.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from airflow_asset_sync.api.spec import Kafka, ObjectRef
from airflow_asset_sync.clients.kafka.errors import (
    KafkaConfigError,
    KafkaTransportError,
    error_class,
)
from airflow_asset_sync.clients.kafka.naming import MAX_TOPIC_LENGTH, NAME_PREFIX, default_topic

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


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
    #: Partitions for a topic this module creates (`clients.kafka` says why 1).
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
        return error_class(exc)(f"{what}: {detail}")

    def describe(self) -> str:
        """For logs: where and how, without credentials."""
        return (
            f"topic={self.topic} bootstrap={','.join(self.bootstrap_servers)} "
            f"security={self.security_protocol}"
            + (f"/{self.sasl_mechanism}" if self.sasl_mechanism else "")
        )
