"""Status conditions: types, reasons, and the pure function that computes them.

Condition types, following the kstatus convention that Flux, Argo CD and `kubectl wait` read:

- `Ready` (normal-true: True is good). Always present. True when the worker runs the current
  spec and its pod is ready. Unknown while a rollout is in progress. False otherwise, with a
  reason saying why; its message is the `Status` printer column.
- `Reconciling` (abnormal-true: present only while True). The operator is working towards
  the desired state and expects to get there: a rollout, a wait for a Secret, a retry after
  an API error.
- `Stalled` (abnormal-true: present only while True). Progress needs a person: the spec is
  invalid, a child name is taken by another owner, or the rollout exceeded its deadline.
- `Paused` (abnormal-true: present only while True). `spec.suspend` is true; the worker is
  scaled to zero on purpose.
- `EventsLost` (abnormal-true). The worker found the source's history purged past its
  checkpoint (``status.source.lastGap``, `airflow db clean`): events may be missing in the
  targets. It does not change Ready (the sync works on); it stays as the record of the last
  gap, and each new gap changes its message, which posts a Warning Event
  (`reconcile.transition_events`).

Abnormal-true conditions are removed rather than set to False, as kstatus prescribes, so their
mere presence means trouble (or, for Paused, intent).

Reasons are CamelCase constants. A "problem" (see `Problem`) is something a reconcile step
found, or a failure the worker reported in status (`worker_problem`: a wrong password, an
unknown CA, an instance down for over a minute); the Deployment's own state is only
consulted when there is none. What to do for each reason comes from `hints`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, get_args

from airflow_asset_sync.api.status import (
    Condition,
    ConditionStatus,
    FailureComponent,
    FailureKind,
)
from airflow_asset_sync.controller.hints import with_action


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    PAUSED = "Paused"
    EVENTS_LOST = "EventsLost"


class Reason(StrEnum):
    # From the worker Deployment's state.
    WORKER_AVAILABLE = "WorkerAvailable"
    PROGRESSING = "Progressing"
    WORKER_UNAVAILABLE = "WorkerUnavailable"
    ROLLOUT_FAILED = "RolloutFailed"
    SUSPENDED = "Suspended"
    # From reconcile steps (problems).
    INVALID_SPEC = "InvalidSpec"
    WORKER_IMAGE_UNSET = "WorkerImageUnset"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
    CHILD_CONFLICT = "ChildConflict"
    KUBERNETES_API_ERROR = "KubernetesApiError"
    # From the worker's report of a purge (status.source.lastGap).
    SOURCE_EVENTS_PURGED = "SourceEventsPurged"


#: Reasons that come from reconcile steps rather than from the Deployment. While Ready carries
#: one of these, a Deployment event must not overwrite it: the problem is the news.
PROBLEM_REASONS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.WORKER_IMAGE_UNSET,
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_KEY_NOT_FOUND,
        Reason.CHILD_CONFLICT,
        Reason.KUBERNETES_API_ERROR,
    }
)


#: Reasons for failures the worker reports (`worker_problem`): component + kind.
WORKER_REASONS = frozenset(
    f"{component}{kind}"
    for component in get_args(FailureComponent)
    for kind in get_args(FailureKind)
)

#: How each failure kind reads in a message.
_KIND_TEXT = {
    "AuthFailed": "authentication failed",
    "TLSFailed": "certificate not trusted",
    "ConfigInvalid": "invalid settings",
    "Rejected": "request rejected",
    "Unavailable": "unreachable",
}
#: At most this many problems are listed in one condition message (the rest are counted).
MAX_LISTED = 3


def listing(items: Sequence[str]) -> str:
    """Up to `MAX_LISTED` items joined with "; ", then how many more there are."""
    shown = "; ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return f"{shown}; and {more} more" if more > 0 else shown


@dataclass(frozen=True, kw_only=True)
class Problem:
    """Something that stops the worker from running the spec: found by a reconcile step,
    or reported by the worker."""

    reason: str
    message: str
    #: True when retrying will not help until a person acts (kopf.PermanentError, Stalled);
    #: False when it may resolve by itself (kopf.TemporaryError with back-off, Reconciling).
    stalled: bool


class WorkerPhase(StrEnum):
    MISSING = "Missing"
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"
    FAILED = "Failed"
    SCALED_DOWN = "ScaledDown"


@dataclass(frozen=True, kw_only=True)
class WorkerState:
    phase: WorkerPhase
    message: str


@dataclass(frozen=True, kw_only=True)
class Observed:
    """Everything the conditions depend on."""

    generation: int
    suspended: bool
    worker: WorkerState
    problem: Problem | None = None
    #: A failure the worker reported in status (`worker_problem`).
    worker_problem: Problem | None = None
    #: The last purge the worker found (`source_gap`): the EventsLost condition's message.
    gap: str | None = None


def _by_type(items: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in items or () if isinstance(c, Mapping)}


def worker_state(deployment: Mapping[str, Any] | None) -> WorkerState:
    """Classify the worker Deployment, as `kubectl rollout status` would."""
    if deployment is None:
        return WorkerState(phase=WorkerPhase.MISSING, message="Worker Deployment does not exist")
    name = deployment.get("metadata", {}).get("name", "worker")
    generation = int(deployment.get("metadata", {}).get("generation") or 0)
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    conds = _by_type(status.get("conditions"))
    progressing = conds.get("Progressing", {})

    if progressing.get("status") == "False" and (
        progressing.get("reason") == "ProgressDeadlineExceeded"
    ):
        detail = progressing.get("message") or "progress deadline exceeded"
        return WorkerState(phase=WorkerPhase.FAILED, message=f"Worker rollout failed: {detail}")
    if int(status.get("observedGeneration") or 0) < generation:
        return WorkerState(
            phase=WorkerPhase.PROGRESSING,
            message=f"Waiting for Deployment {name} to be observed by its controller",
        )
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if desired == 0:
        if replicas > 0:
            return WorkerState(phase=WorkerPhase.PROGRESSING, message="Worker pod is shutting down")
        return WorkerState(phase=WorkerPhase.SCALED_DOWN, message="Worker is scaled to zero")
    if updated < desired:
        return WorkerState(
            phase=WorkerPhase.PROGRESSING,
            message=f"Rolling out the worker: {updated} of {desired} pod updated",
        )
    if replicas > updated:
        return WorkerState(
            phase=WorkerPhase.PROGRESSING, message="Waiting for the old worker pod to terminate"
        )
    if available < desired:
        if progressing.get("reason") != "NewReplicaSetAvailable":
            return WorkerState(
                phase=WorkerPhase.PROGRESSING, message="Waiting for the worker pod to be ready"
            )
        detail = conds.get("Available", {}).get("message") or "the worker pod is not ready"
        return WorkerState(
            phase=WorkerPhase.UNAVAILABLE, message=f"Worker is unavailable: {detail}"
        )
    return WorkerState(phase=WorkerPhase.AVAILABLE, message=f"Worker {name} is available")


def worker_problem(status: Mapping[str, Any] | None) -> Problem | None:
    """The failures the worker reports in `status` (``source.failure``,
    ``targets[].failure``) as one problem; None when it reports none.

    Failures that retrying cannot fix come first and make the problem stalled; the reason
    is the first one's, and the message lists up to `MAX_LISTED` of them with the worker's
    error, so Ready's message carries it.
    """
    if not isinstance(status, Mapping):
        return None
    found: list[tuple[bool, str, str]] = []  # (stalled, reason, text)
    source = status.get("source")
    places: list[tuple[str | None, Any]] = [
        (None, source.get("failure") if isinstance(source, Mapping) else None)
    ]
    for target in status.get("targets") or ():
        if isinstance(target, Mapping):
            places.append((str(target.get("name", "?")), target.get("failure")))
    for target_name, failure in places:
        if not isinstance(failure, Mapping):
            continue
        component, kind = str(failure.get("component")), str(failure.get("kind"))
        reason = f"{component}{kind}"
        if reason not in WORKER_REASONS:
            continue
        stalled = failure.get("retriable") is False
        if component == "Source":
            who = "Source"
        elif component == "Target":
            who = f'Target "{target_name}"'
        elif target_name is None:
            who = "Kafka (publishing)"
        else:
            who = f'Kafka (target "{target_name}")'
        since = "" if stalled else f" since {failure.get('since')}"
        text = f"{who} {_KIND_TEXT[kind]}{since}: {failure.get('message', '')}"
        found.append((stalled, reason, text))
    if not found:
        return None
    found.sort(key=lambda item: not item[0])  # stable: stalled first, then in place order
    message = listing([text for _, _, text in found])
    return Problem(reason=found[0][1], message=message, stalled=found[0][0])


def source_gap(status: Mapping[str, Any] | None) -> str | None:
    """The EventsLost message for the purge the worker last reported, or None.

    It names when the gap was found, so a new gap is a new message (and a new Warning).
    """
    source = status.get("source") if isinstance(status, Mapping) else None
    gap = source.get("lastGap") if isinstance(source, Mapping) else None
    if not isinstance(gap, Mapping):
        return None
    count = source.get("gaps") if isinstance(source, Mapping) else None
    total = f"; {count} gaps so far" if isinstance(count, int) and count > 1 else ""
    return f"Found {gap.get('detectedAt')}: {gap.get('message', '')}{total}"


def events_lost_message(gap: str) -> str:
    """The EventsLost condition's message for `gap` (from `source_gap`), what to do included.

    One function builds it, so a caller asking "is this gap already shown?" compares the
    whole message for equality instead of matching a prefix of the condition's text.
    """
    return with_action(Reason.SOURCE_EVENTS_PURGED, gap)


_Entry = tuple[ConditionType, ConditionStatus, str, str]


#: Phases in which no worker runs: a failure it reported earlier is stale.
_NO_WORKER = frozenset({WorkerPhase.MISSING, WorkerPhase.SCALED_DOWN})


def _entries(observed: Observed) -> list[_Entry]:
    """The conditions that should be present, in display order (Ready first)."""
    T, R = ConditionType, Reason
    ready: _Entry
    extra: list[_Entry] = []
    worker = observed.worker
    problem = observed.problem
    reported = observed.worker_problem
    if problem is not None:
        ready = (T.READY, "False", problem.reason, problem.message)
        kind = T.STALLED if problem.stalled else T.RECONCILING
        extra.append((kind, "True", problem.reason, with_action(problem.reason, problem.message)))
    elif observed.suspended:
        ready = (T.READY, "False", R.SUSPENDED, "Suspended: the worker is scaled to zero")
        if worker.phase == WorkerPhase.PROGRESSING:
            extra.append((T.RECONCILING, "True", R.PROGRESSING, worker.message))
    elif reported is not None and worker.phase not in _NO_WORKER:
        # Before the Deployment's state: a pod that never gets ready because the source
        # refuses its password is stalled, not "waiting for the worker pod to be ready".
        ready = (T.READY, "False", reported.reason, reported.message)
        kind = T.STALLED if reported.stalled else T.RECONCILING
        extra.append(
            (kind, "True", reported.reason, with_action(reported.reason, reported.message))
        )
    elif worker.phase == WorkerPhase.AVAILABLE:
        ready = (T.READY, "True", R.WORKER_AVAILABLE, worker.message)
    elif worker.phase == WorkerPhase.UNAVAILABLE:
        ready = (
            T.READY,
            "False",
            R.WORKER_UNAVAILABLE,
            with_action(R.WORKER_UNAVAILABLE, worker.message),
        )
    elif worker.phase == WorkerPhase.FAILED:
        ready = (T.READY, "False", R.ROLLOUT_FAILED, worker.message)
        extra.append(
            (T.STALLED, "True", R.ROLLOUT_FAILED, with_action(R.ROLLOUT_FAILED, worker.message))
        )
    else:  # MISSING, PROGRESSING, or SCALED_DOWN left over from a suspend just lifted
        ready = (T.READY, "Unknown", R.PROGRESSING, worker.message)
        extra.append((T.RECONCILING, "True", R.PROGRESSING, worker.message))
    if observed.suspended:
        extra.append((T.PAUSED, "True", R.SUSPENDED, "spec.suspend is true"))
    if observed.gap is not None:
        reason = R.SOURCE_EVENTS_PURGED
        extra.append((T.EVENTS_LOST, "True", reason, events_lost_message(observed.gap)))
    return [ready, *extra]


def compute(
    *, observed: Observed, previous: Sequence[Mapping[str, Any]] | None, now: datetime
) -> list[dict[str, Any]]:
    """The `status.conditions` list for `observed`.

    `lastTransitionTime` is kept from `previous` when a condition's status did not change, so
    it tells when the state last flipped, not when the operator last looked; with it kept,
    an unchanged state yields an identical list and the caller can skip the write.
    """
    before = _by_type(previous)
    stamp = now.replace(microsecond=0)
    out: list[dict[str, Any]] = []
    for type_, status, reason, message in _entries(observed):
        condition = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=stamp,
            observed_generation=observed.generation,
        ).to_patch()
        old = before.get(type_)
        if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
            # Kept verbatim: re-rendering could change its spelling and cause a write.
            condition["lastTransitionTime"] = old["lastTransitionTime"]
        out.append(condition)
    return out


def find(
    conditions: Sequence[Mapping[str, Any]] | None, type_: ConditionType
) -> Mapping[str, Any] | None:
    """The condition of `type_`, or None."""
    return _by_type(conditions).get(type_)
