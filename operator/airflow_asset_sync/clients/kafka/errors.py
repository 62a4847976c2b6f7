"""What the Kafka client raises: one tree, with ``retriable`` on the class (as in aiokafka).

Error tree::

    KafkaTransportError     Unavailable: not retriable unless a subclass says so
     +-- KafkaUnavailable   Unavailable, retriable: unreachable, timed out, a rebalance
     +-- KafkaAuthError     AuthFailed: authentication or authorization failed
     +-- KafkaConfigError   ConfigInvalid: the settings are invalid (CA file, SASL, topic...)
     +-- KafkaRejected      Rejected: the broker refused a request for good (record too large)

The root is `api.errors.ServiceError`; the word before each colon is its ``failure_kind``,
and ``component`` is "Kafka" for all of them (whichever side published or consumed).

Everything aiokafka raises leaves this package as one of these (`error_class` picks which),
with the original chained as ``__cause__``; the worker reads ``retriable`` to choose between
back-off and reporting a failure a person must fix, never the message.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka import errors as kerr

from airflow_asset_sync.api.errors import ServiceError


class KafkaTransportError(ServiceError):
    """Kafka could not do what was asked. Not retriable unless a subclass says so."""

    component = "Kafka"


class KafkaUnavailable(KafkaTransportError):
    """The cluster is unreachable, timed out or is moving leaders: retry with back-off."""

    retriable = True


class KafkaAuthError(KafkaTransportError):
    """Authentication or authorization failed: retrying will not help until config changes."""

    failure_kind = "AuthFailed"


class KafkaConfigError(KafkaTransportError):
    """The settings are invalid (missing CA file, SASL without credentials, bad topic...)."""

    failure_kind = "ConfigInvalid"


class KafkaRejected(KafkaTransportError):
    """The broker refused a request for good (record too large, invalid record...)."""

    failure_kind = "Rejected"


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


def error_class(exc: BaseException) -> type[KafkaTransportError]:
    """The typed error to wrap ``exc`` in, chosen by its class and aiokafka's own flag."""
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
