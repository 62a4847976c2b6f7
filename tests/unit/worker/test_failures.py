"""What the worker reports as its failure: classification, grace for outages, clearing."""

from __future__ import annotations

import pytest

from airflow_asset_sync.api.errors import ServiceError
from airflow_asset_sync.api.status import SourceStatus, TargetStatus
from airflow_asset_sync.clients.airflow.base import (
    AirflowError,
    AssetNotFound,
    AuthFailed,
    BadRequest,
    BadResponse,
    InvalidRow,
    TlsFailed,
    Unavailable,
    WriteOutcomeUnknown,
)
from airflow_asset_sync.clients.kafka.errors import (
    KafkaAuthError,
    KafkaConfigError,
    KafkaRejected,
    KafkaTransportError,
    KafkaUnavailable,
)
from airflow_asset_sync.worker.failures import (
    GRACE_SECONDS,
    FailureReport,
    classify,
    component_of,
)

from .fakes import FakeClock


@pytest.mark.parametrize(
    ("exc", "kind", "retriable"),
    [
        (AuthFailed("login refused"), "AuthFailed", False),
        (TlsFailed("certificate verify failed"), "TLSFailed", False),
        (BadResponse("HTML page"), "Rejected", False),
        (Unavailable("HTTP 503"), "Unavailable", True),
        (KafkaAuthError("SASL failed"), "AuthFailed", False),
        (KafkaConfigError("no CA file"), "ConfigInvalid", False),
        (KafkaUnavailable("no broker"), "Unavailable", True),
        (RuntimeError("a bug"), "Unavailable", True),
    ],
)
def test_classify_follows_the_clients_retriable_flag(
    exc: Exception, kind: str, retriable: bool
) -> None:
    assert classify(exc) == (kind, retriable)


@pytest.mark.parametrize(
    ("exc", "kind", "retriable", "component"),
    [
        (AirflowError("x"), "Unavailable", False, "Target"),
        (Unavailable("x"), "Unavailable", True, "Target"),
        (WriteOutcomeUnknown("x"), "Unavailable", True, "Target"),
        (AuthFailed("x"), "AuthFailed", False, "Target"),
        (TlsFailed("x"), "TLSFailed", False, "Target"),
        (AssetNotFound("x"), "Unavailable", False, "Target"),
        (BadRequest("x"), "Rejected", False, "Target"),
        (BadResponse("x"), "Rejected", False, "Target"),
        (InvalidRow("x", problem="p"), "Rejected", False, "Target"),
        (KafkaTransportError("x"), "Unavailable", False, "Kafka"),
        (KafkaUnavailable("x"), "Unavailable", True, "Kafka"),
        (KafkaAuthError("x"), "AuthFailed", False, "Kafka"),
        (KafkaConfigError("x"), "ConfigInvalid", False, "Kafka"),
        (KafkaRejected("x"), "Rejected", False, "Kafka"),
    ],
)
def test_every_client_error_carries_its_kind_retriable_and_component(
    exc: ServiceError, kind: str, retriable: bool, component: str
) -> None:
    """The data on each class of both trees is what the report reads (same message "x")."""
    assert (exc.failure_kind, exc.retriable) == (kind, retriable)
    assert classify(exc) == (kind, retriable)
    assert component_of(exc, "Target") == component


def test_classification_reads_the_errors_data_not_its_class_or_message() -> None:
    """An error from no known client, whose message says the opposite of its data."""

    class BrokerQuota(ServiceError):
        retriable = True
        failure_kind = "ConfigInvalid"
        component = "Kafka"

    exc = BrokerQuota("AuthFailed: not retriable (TLS certificate verify failed)")
    assert classify(exc) == ("ConfigInvalid", True)
    status = SourceStatus()
    FailureReport(status, side="Source", clock=FakeClock(), grace=0).failed(exc)
    assert status.failure is not None
    assert (status.failure.component, status.failure.kind) == ("Kafka", "ConfigInvalid")
    assert status.failure.retriable is True


def test_a_failure_retrying_cannot_fix_is_reported_at_once() -> None:
    clock = FakeClock()
    status = TargetStatus(name="b")
    report = FailureReport(status, side="Target", clock=clock)
    report.failed(AuthFailed("POST http://b/auth/token: login refused"))
    assert status.failure is not None
    assert (status.failure.reason, status.failure.retriable) == ("TargetAuthFailed", False)
    assert status.failure.message == "POST http://b/auth/token: login refused"
    assert status.failure.since == clock.now()


async def test_an_outage_is_reported_only_after_the_grace_and_keeps_its_start() -> None:
    clock = FakeClock()
    status = SourceStatus()
    report = FailureReport(status, side="Source", clock=clock)
    started = clock.now()
    report.failed(Unavailable("connection refused"))
    await clock.advance(GRACE_SECONDS - 1)
    report.failed(Unavailable("connection refused"))
    assert status.failure is None  # a blip never flips Ready
    await clock.advance(2)
    report.failed(Unavailable("connection refused"))
    assert status.failure is not None
    assert status.failure.reason == "SourceUnavailable"
    assert status.failure.since == started
    await clock.advance(30)
    report.failed(Unavailable("timed out"))
    assert status.failure.since == started  # the same streak
    assert status.failure.message == "timed out"


async def test_a_success_clears_the_report_and_the_streak() -> None:
    clock = FakeClock()
    status = SourceStatus()
    report = FailureReport(status, side="Source", clock=clock)
    report.failed(Unavailable("down"))
    await clock.advance(GRACE_SECONDS - 1)
    report.succeeded()
    await clock.advance(2)
    report.failed(Unavailable("down again"))
    assert status.failure is None  # a new streak: its grace starts over
    report.failed(AuthFailed("refused"))
    assert status.failure is not None
    report.succeeded()
    assert status.failure is None


def test_kafka_failures_are_kafkas_and_cleared_by_a_kafka_success_only() -> None:
    clock = FakeClock()
    status = TargetStatus(name="b")
    report = FailureReport(status, side="Target", clock=clock)
    report.failed(KafkaAuthError("group authorization failed"))
    assert status.failure is not None and status.failure.reason == "KafkaAuthFailed"
    report.succeeded(component="Target")
    assert status.failure is not None  # a target write says nothing about Kafka
    report.succeeded(component="Kafka")
    assert status.failure is None
