"""Conditions from observed state: the pure part of status."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_asset_sync.controller import conditions as c
from airflow_asset_sync.controller.conditions import ConditionType, Reason, WorkerPhase

NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _deployment(
    *,
    replicas: int = 1,
    generation: int = 2,
    observed: int = 2,
    updated: int = 1,
    available: int = 1,
    total: int | None = None,
    progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable"),
) -> dict[str, Any]:
    return {
        "metadata": {"name": "orders-worker", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": updated if total is None else total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "message": "Deployment does not have minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": 'ReplicaSet "x" has timed out progressing.',
                },
            ],
        },
    }


@pytest.mark.parametrize(
    ("deployment", "phase"),
    [
        (None, WorkerPhase.MISSING),
        (_deployment(), WorkerPhase.AVAILABLE),
        (_deployment(observed=1), WorkerPhase.PROGRESSING),
        (_deployment(updated=0, available=0), WorkerPhase.PROGRESSING),
        (_deployment(total=2), WorkerPhase.PROGRESSING),
        (
            _deployment(available=0, progressing=("True", "ReplicaSetUpdated")),
            WorkerPhase.PROGRESSING,
        ),
        (_deployment(available=0), WorkerPhase.UNAVAILABLE),
        (
            _deployment(available=0, progressing=("False", "ProgressDeadlineExceeded")),
            WorkerPhase.FAILED,
        ),
        (_deployment(replicas=0, updated=0, available=0), WorkerPhase.SCALED_DOWN),
        (_deployment(replicas=0, updated=0, available=0, total=1), WorkerPhase.PROGRESSING),
        (
            {"metadata": {"name": "w", "generation": 1}, "spec": {"replicas": 1}},
            WorkerPhase.PROGRESSING,
        ),
    ],
)
def test_worker_state(deployment: dict[str, Any] | None, phase: WorkerPhase) -> None:
    assert c.worker_state(deployment).phase == phase


def _compute(
    observed: c.Observed, previous: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    out = c.compute(observed=observed, previous=previous, now=NOW)
    assert out[0]["type"] == "Ready", "Ready comes first"
    return {cond["type"]: cond for cond in out}


def _observed(phase: WorkerPhase = WorkerPhase.AVAILABLE, **kwargs: Any) -> c.Observed:
    return c.Observed(
        generation=3,
        suspended=kwargs.pop("suspended", False),
        worker=c.WorkerState(phase=phase, message=f"worker is {phase}"),
        **kwargs,
    )


def test_available_worker_is_ready_and_nothing_else() -> None:
    conds = _compute(_observed())
    assert conds == {
        "Ready": {
            "type": "Ready",
            "status": "True",
            "reason": "WorkerAvailable",
            "message": "worker is Available",
            "lastTransitionTime": "2024-05-01T12:00:00Z",
            "observedGeneration": 3,
        }
    }


def test_progressing_worker_is_ready_unknown_and_reconciling() -> None:
    conds = _compute(_observed(WorkerPhase.PROGRESSING))
    assert set(conds) == {"Ready", "Reconciling"}
    assert conds["Ready"]["status"] == "Unknown"
    assert conds["Reconciling"]["reason"] == Reason.PROGRESSING


def test_failed_rollout_is_stalled() -> None:
    conds = _compute(_observed(WorkerPhase.FAILED))
    assert set(conds) == {"Ready", "Stalled"}
    assert conds["Ready"]["status"] == "False"
    assert conds["Stalled"]["reason"] == Reason.ROLLOUT_FAILED


def test_unavailable_after_rollout_is_not_ready_but_not_reconciling() -> None:
    conds = _compute(_observed(WorkerPhase.UNAVAILABLE))
    assert set(conds) == {"Ready"}
    assert conds["Ready"]["reason"] == Reason.WORKER_UNAVAILABLE


def test_suspended_is_paused_and_not_ready() -> None:
    conds = _compute(_observed(WorkerPhase.SCALED_DOWN, suspended=True))
    assert set(conds) == {"Ready", "Paused"}
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == Reason.SUSPENDED
    assert conds["Paused"]["status"] == "True"
    scaling = _compute(_observed(WorkerPhase.PROGRESSING, suspended=True))
    assert set(scaling) == {"Ready", "Reconciling", "Paused"}


def test_waiting_problem_is_reconciling_and_stalled_problem_is_stalled() -> None:
    waiting = c.Problem(
        reason=Reason.SECRET_NOT_FOUND, message='Secret "x" not found', stalled=False
    )
    conds = _compute(_observed(problem=waiting))
    assert set(conds) == {"Ready", "Reconciling"}
    assert conds["Ready"]["message"] == 'Secret "x" not found'
    assert conds["Reconciling"]["reason"] == "SecretNotFound"
    stalled = c.Problem(reason=Reason.INVALID_SPEC, message="bad", stalled=True)
    conds = _compute(_observed(problem=stalled, suspended=True))
    assert set(conds) == {"Ready", "Stalled", "Paused"}


def test_transition_time_is_kept_while_status_is_unchanged() -> None:
    first = c.compute(observed=_observed(), previous=None, now=NOW)
    later = NOW + timedelta(hours=1)
    same = c.compute(observed=_observed(), previous=first, now=later)
    assert same == first, "an unchanged state yields an identical list: no write needed"
    flipped = c.compute(observed=_observed(WorkerPhase.UNAVAILABLE), previous=first, now=later)
    assert flipped[0]["lastTransitionTime"] == "2024-05-01T13:00:00Z"


def test_message_change_alone_keeps_the_transition_time() -> None:
    first = c.compute(observed=_observed(WorkerPhase.PROGRESSING), previous=None, now=NOW)
    other = c.Observed(
        generation=3,
        suspended=False,
        worker=c.WorkerState(phase=WorkerPhase.PROGRESSING, message="another step"),
    )
    later = c.compute(observed=other, previous=first, now=NOW + timedelta(minutes=1))
    assert later[0]["message"] == "another step"
    assert later[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]


def test_every_reason_is_camel_case() -> None:
    camel = re.compile(r"^(?:[A-Z][a-z0-9]*)+$")
    for value in [*Reason, *ConditionType]:
        assert camel.match(value), value


def test_find() -> None:
    conds = c.compute(observed=_observed(), previous=None, now=NOW)
    ready = c.find(conds, ConditionType.READY)
    assert ready is not None
    assert ready["status"] == "True"
    assert c.find(conds, ConditionType.STALLED) is None
    assert c.find(None, ConditionType.READY) is None


# --- failures the worker reports ------------------------------------------------------------


def _failure(component: str, kind: str, *, retriable: bool, message: str) -> dict[str, Any]:
    return {
        "component": component,
        "kind": kind,
        "retriable": retriable,
        "message": message,
        "since": "2024-05-01T11:58:00Z",
    }


def test_a_failure_retrying_cannot_fix_makes_the_sync_stalled_with_the_workers_error() -> None:
    status = {
        "source": {},
        "targets": [
            {
                "name": "b",
                "failure": _failure(
                    "Target",
                    "AuthFailed",
                    retriable=False,
                    message="POST /auth/token: login refused",
                ),
            }
        ],
    }
    reported = c.worker_problem(status)
    assert reported == c.Problem(
        reason="TargetAuthFailed",
        message='Target "b" authentication failed: POST /auth/token: login refused',
        stalled=True,
    )
    # Even while the pod is not ready (a source refusing the password keeps it so).
    for phase in (WorkerPhase.AVAILABLE, WorkerPhase.PROGRESSING, WorkerPhase.FAILED):
        conds = _compute(_observed(phase, worker_problem=reported))
        assert set(conds) == {"Ready", "Stalled"}
        assert conds["Ready"]["status"] == "False"
        assert conds["Ready"]["reason"] == "TargetAuthFailed"
        assert conds["Ready"]["message"] == reported.message
        assert conds["Stalled"]["message"].startswith(reported.message + ". What to do: check ")


def test_an_outage_is_reconciling_and_says_since_when() -> None:
    status = {
        "source": {
            "failure": _failure(
                "Source",
                "Unavailable",
                retriable=True,
                message="GET /api/v2/assets/events: HTTP 503",
            )
        }
    }
    reported = c.worker_problem(status)
    assert reported is not None and not reported.stalled
    conds = _compute(_observed(worker_problem=reported))
    assert set(conds) == {"Ready", "Reconciling"}
    assert conds["Ready"]["reason"] == "SourceUnavailable"
    assert "since 2024-05-01T11:58:00Z" in conds["Ready"]["message"]


def test_stalled_failures_come_first_and_kafka_names_its_side() -> None:
    status = {
        "source": {"failure": _failure("Kafka", "Unavailable", retriable=True, message="x")},
        "targets": [
            {
                "name": "b",
                "failure": _failure(
                    "Kafka", "AuthFailed", retriable=False, message="group authorization failed"
                ),
            },
            {"name": "c"},
        ],
    }
    reported = c.worker_problem(status)
    assert reported is not None
    assert (reported.reason, reported.stalled) == ("KafkaAuthFailed", True)
    assert reported.message.startswith('Kafka (target "b") authentication failed: group')
    assert "; Kafka (publishing) unreachable since" in reported.message


def test_no_failure_or_no_worker_means_the_deployment_speaks() -> None:
    assert c.worker_problem({"source": {}, "targets": [{"name": "b"}]}) is None
    assert c.worker_problem(None) is None
    reported = c.Problem(reason="SourceAuthFailed", message="stale", stalled=True)
    # Suspended or deleted: no worker runs, a failure it reported earlier is stale.
    conds = _compute(_observed(WorkerPhase.MISSING, worker_problem=reported))
    assert conds["Ready"]["reason"] == Reason.PROGRESSING
    # A reconcile problem (the spec, a Secret) comes before what the worker said.
    problem = c.Problem(reason=Reason.SECRET_NOT_FOUND, message="gone", stalled=False)
    conds = _compute(_observed(problem=problem, worker_problem=reported))
    assert conds["Ready"]["reason"] == "SecretNotFound"


def test_every_reason_a_condition_can_carry_has_a_hint() -> None:
    from airflow_asset_sync.controller import hints

    reasons = {str(r) for r in Reason} | c.WORKER_REASONS
    reachable = reasons - {
        "SourceConfigInvalid",
        "TargetConfigInvalid",
        "KafkaTLSFailed",
        "WorkerAvailable",
    }
    assert reachable - set(hints.HINTS) == set()


def test_a_reported_gap_adds_events_lost_and_leaves_ready_alone() -> None:
    status = {
        "source": {
            "gaps": 1,
            "lastGap": {"detectedAt": "2024-05-01T11:59:00Z", "after": "x", "message": "purged"},
        }
    }
    gap = c.source_gap(status)
    assert gap == "Found 2024-05-01T11:59:00Z: purged"
    conds = _compute(_observed(gap=gap))
    assert conds["Ready"]["reason"] == "WorkerAvailable"
    assert conds["EventsLost"]["reason"] == Reason.SOURCE_EVENTS_PURGED
    assert conds["EventsLost"]["message"].startswith(gap + ". What to do: ")
    assert c.source_gap({"source": {"gaps": 0}}) is None
    assert c.source_gap(None) is None
