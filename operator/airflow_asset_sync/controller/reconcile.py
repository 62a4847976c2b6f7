"""Reconciling one AirflowAssetSync: an ordered list of small steps, then status.

    validate spec -> resolve worker image -> check Secrets and keys -> build children
    -> apply children (ServiceAccount, Role, RoleBinding, Deployment, and the Service with
    `spec.source.push`) -> push: delete a Service push no longer wants, report the poke URL
    -> conditions

Each step either returns what the next needs or raises `StepFailed` with a `Problem`:
"stalled" (a person must act: kopf.PermanentError) or "waiting" (it may resolve itself:
kopf.TemporaryError with back-off). The functions here never import kopf: the handlers
translate `Result` into kopf's terms, so all of this is testable with a fake `KubeApi`.

The operator writes only `status.observedGeneration`, `status.conditions` and
`status.pokeUrl`; the worker owns `status.source` and `status.targets`, and a merge patch of
our keys leaves those alone. `pokeUrl` is written by its own step (`report_push`), only when
it changes: it follows the spec, not the worker's health, so it has no place in the
conditions' write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import pydantic

from airflow_asset_sync.api.spec import GROUP, KIND, SyncSpec
from airflow_asset_sync.api.validation import validation_problems
from airflow_asset_sync.clients.kube import ChildKind, KubeApi, KubeError, SecretInfo
from airflow_asset_sync.controller.conditions import (
    PROBLEM_REASONS,
    WORKER_REASONS,
    ConditionType,
    Observed,
    Problem,
    Reason,
    WorkerPhase,
    WorkerState,
    events_lost_message,
    listing,
    source_gap,
    worker_problem,
    worker_state,
)
from airflow_asset_sync.controller.conditions import compute as compute_conditions
from airflow_asset_sync.controller.conditions import find as find_condition
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.controller.observed import ChildLookup, changed_by_others, controller_uid
from airflow_asset_sync.resources.credentials import secret_key_uses
from airflow_asset_sync.resources.deployment import resolve_image as resolve_worker_image
from airflow_asset_sync.resources.deployment import worker_deployment
from airflow_asset_sync.resources.fingerprint import hash_of, stamped
from airflow_asset_sync.resources.naming import Owner, poke_url, worker_name, worker_service_name
from airflow_asset_sync.resources.rbac import role, role_binding, service_account
from airflow_asset_sync.resources.service import worker_service

__all__ = ["changed_by_others", "controller_uid"]  # re-exported: the handlers ask them here

#: Children in creation order. The operator deletes none of them when a sync goes: each
#: carries a controller owner reference with `blockOwnerDeletion`, and the garbage collector
#: deletes them with their sync (the Service alone also goes with `push`, `report_push`).
CHILD_KINDS = (
    ChildKind.SERVICE_ACCOUNT,
    ChildKind.ROLE,
    ChildKind.ROLE_BINDING,
    ChildKind.DEPLOYMENT,
    # Only with `spec.source.push`; the one child the operator deletes (when push goes).
    ChildKind.SERVICE,
)

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, kw_only=True)
class Event:
    """A Kubernetes event to post on the AirflowAssetSync."""

    type: EventType
    reason: str
    message: str


class SecretReader(Protocol):
    def read_secret(self, *, namespace: str, name: str) -> SecretInfo | None: ...


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a reconcile needs from the outside world."""

    kube: KubeApi
    config: OperatorConfig
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    #: The watches' fingerprints of the children (`controller.observed`): a child that is
    #: as it would be applied is neither read nor applied. None: always read and apply.
    observed: ChildLookup | None = None
    #: Where Secrets are read; None: `kube`. The resync reads through a short-lived cache.
    secrets: SecretReader | None = None
    #: Told of every child the reconcile applied (the answer's body), so the fingerprints
    #: are never older than the operator's own writes.
    applied: Callable[[Mapping[str, Any]], None] | None = None


@dataclass(frozen=True, kw_only=True)
class Result:
    """What one reconcile found and wants written."""

    #: `{"observedGeneration": ..., "conditions": [...]}`: the operator's status keys.
    status: dict[str, Any]
    #: False when `status` equals what the object already has: skip the write.
    status_changed: bool
    problem: Problem | None
    events: list[Event]


class StepFailed(Exception):
    """A reconcile step found a `Problem`; `reconcile` turns it into conditions."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _api_problem(exc: KubeError) -> Problem:
    # Not retriable (403 forbidden, 422 invalid) means the operator's RBAC or a builder is
    # wrong: a person must look. The periodic resync still retries it.
    return Problem(reason=Reason.KUBERNETES_API_ERROR, message=str(exc), stalled=not exc.retriable)


# --- steps ---------------------------------------------------------------------------------


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def validate_spec(body: Mapping[str, Any]) -> SyncSpec:
    """Parse the spec with the same model the worker uses.

    The CRD schema and CEL rules reject most mistakes at `kubectl apply`; what reaches here
    invalid is what they cannot say (a Python regular expression that does not compile) or an
    object stored before a stricter CRD was installed.
    """
    try:
        return SyncSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as exc:
        raise StepFailed(
            Problem(
                reason=Reason.INVALID_SPEC,
                message=f"Invalid spec: {listing(validation_problems(exc))}",
                stalled=True,
            )
        ) from exc


def resolve_image(spec: SyncSpec, config: OperatorConfig) -> str:
    image = resolve_worker_image(spec, default=config.worker_image)
    if image is None:
        raise StepFailed(
            Problem(
                reason=Reason.WORKER_IMAGE_UNSET,
                message=(
                    "No worker image: set spec.worker.image, or AAS_WORKER_IMAGE on the operator"
                ),
                stalled=True,
            )
        )
    return image


def check_secrets(*, kube_api: SecretReader, namespace: str, spec: SyncSpec) -> dict[str, str]:
    """Check every referenced Secret and key exists; return `{secret: resourceVersion}`.

    Checked before the Deployment is touched: a pod with a missing `secretKeyRef` sits in
    CreateContainerConfigError with the reason buried in pod events, and a rollout to it would
    replace a worker that is still running fine on the old spec.
    """
    uses = secret_key_uses(spec)
    infos: dict[str, SecretInfo | None] = {}
    for name in sorted({use.secret_name for use in uses}):
        try:
            infos[name] = kube_api.read_secret(namespace=namespace, name=name)
        except KubeError as exc:
            raise StepFailed(_api_problem(exc)) from exc
    missing_secrets = [
        f'Secret "{name}" not found (referenced by '
        + ", ".join(sorted({u.field_path for u in uses if u.secret_name == name}))
        + ")"
        for name, info in infos.items()
        if info is None
    ]
    if missing_secrets:
        raise StepFailed(
            Problem(
                reason=Reason.SECRET_NOT_FOUND,
                message=listing(missing_secrets),
                stalled=False,
            )
        )
    missing_keys = [
        f'Secret "{use.secret_name}" has no key "{use.key}" (referenced by {use.field_path})'
        for use in uses
        if (info := infos[use.secret_name]) is not None and use.key not in info.keys
    ]
    if missing_keys:
        raise StepFailed(
            Problem(
                reason=Reason.SECRET_KEY_NOT_FOUND,
                message=listing(missing_keys),
                stalled=False,
            )
        )
    return {name: info.resource_version for name, info in infos.items() if info is not None}


def desired_children(
    *, owner: Owner, spec: SyncSpec, image: str, secret_versions: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The children in `CHILD_KINDS` order (the Service only with `spec.source.push`)."""
    children = [
        service_account(owner),
        role(owner),
        role_binding(owner),
        worker_deployment(owner=owner, spec=spec, image=image, secret_versions=secret_versions),
    ]
    if spec.source.push is not None:
        children.append(worker_service(owner))
    return children


def report_push(
    *,
    kube_api: KubeApi,
    body: Mapping[str, Any],
    owner: Owner,
    spec: SyncSpec,
    observed: ChildLookup | None = None,
) -> list[Event]:
    """Without `push`, delete the worker Service we created for it; write `status.pokeUrl`
    (or remove it) when it differs from what the object has.

    Why delete here when every other child is left to the garbage collector: the others live
    as long as their sync, while the Service lives only as long as `push` does; a Service
    left behind would keep a cluster IP and an endpoint for pokes the worker then refuses.
    One controlled by another owner is left alone (as `apply_children` never takes over).
    With `observed`, a Service the watches never showed is not looked for: a sync without
    `push` costs no request here.
    """
    events: list[Event] = []
    name = worker_service_name(owner.name)
    wanted = None if spec.source.push is None else poke_url(owner.name, owner.namespace)
    try:
        looked_for = observed is None or observed(ChildKind.SERVICE, owner.namespace, name)
        if wanted is None and looked_for:
            current = kube_api.get(ChildKind.SERVICE, namespace=owner.namespace, name=name)
            if current is not None and controller_uid(current) == owner.uid:
                kube_api.delete(ChildKind.SERVICE, namespace=owner.namespace, name=name)
                events.append(
                    Event(type="Normal", reason="Deleted", message=f"Deleted Service {name}")
                )
        if (body.get("status") or {}).get("pokeUrl") != wanted:
            # A merge patch: None removes the key.
            kube_api.patch_sync_status(
                namespace=owner.namespace, name=owner.name, status={"pokeUrl": wanted}
            )
    except KubeError as exc:
        raise StepFailed(_api_problem(exc)) from exc
    return events


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What `apply_children` did: the worker's rollout state and the events to post."""

    worker: WorkerState
    events: list[Event]


def apply_children(
    *,
    kube_api: KubeApi,
    owner: Owner,
    desired: Sequence[dict[str, Any]],
    observed: ChildLookup | None = None,
    first: bool = False,
    on_applied: Callable[[Mapping[str, Any]], None] | None = None,
) -> Applied:
    """Create or converge each child; return the worker's state and what changed.

    An object of the same name controlled by someone else is never taken over: that would
    silently break whatever owns it (the API server refuses the apply: two controllers). An
    object with no controller is adopted (this is how a child orphaned by
    `kubectl delete --cascade=orphan` comes back under its sync).

    Requests: each body is stamped with its applied-hash, and a child the watches show with
    that hash, under this owner and last changed by the operator, is left alone (no request).
    A child the watches showed otherwise is applied (one request). A child they never showed
    is read first, so the event can say Created or Updated, except on the sync's `first`
    reconcile, when its children are new: the apply's 201 says Created.
    """
    events: list[Event] = []
    worker: WorkerState | None = None
    created: list[tuple[str, str]] = []
    for desired_body in desired:
        body = stamped(desired_body)
        kind = ChildKind(body["kind"])
        name = body["metadata"]["name"]
        seen = observed(str(kind), owner.namespace, name) if observed is not None else None
        if seen is not None and seen.as_applied(
            owner_uid=owner.uid, desired_hash=hash_of(body) or ""
        ):
            if kind is ChildKind.DEPLOYMENT:
                worker = seen.worker
            continue
        before: str | None = seen.resource_version if seen is not None else None
        try:
            if seen is None and not first:
                current = kube_api.get(kind, namespace=owner.namespace, name=name)
                _refuse_foreign(current, owner=owner, kind=kind, name=name)
                before = _version(current) if current is not None else None
            applied = kube_api.apply(body)
        except KubeError as exc:
            if exc.status == 422:  # perhaps a controller of its own: say so if it is
                _refuse_foreign(
                    kube_api.get(kind, namespace=owner.namespace, name=name),
                    owner=owner,
                    kind=kind,
                    name=name,
                )
            raise StepFailed(_api_problem(exc)) from exc
        if on_applied is not None:
            on_applied(applied.body)
        if kind is ChildKind.DEPLOYMENT:
            worker = worker_state(applied.body)
        if applied.created:
            created.append((str(kind), name))
        elif before != _version(applied.body):
            events.append(Event(type="Normal", reason="Updated", message=f"Updated {kind} {name}"))
    if created:
        # One event for the lot: 1,000 new syncs posted 4,000 events otherwise.
        events.insert(0, Event(type="Normal", reason="Created", message=_created(created)))
    if worker is None:
        worker = worker_state(None)
    return Applied(worker=worker, events=events)


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _created(children: Sequence[tuple[str, str]]) -> str:
    """ "Created ServiceAccount, Role, RoleBinding and Deployment orders-worker"."""
    names = {name for _, name in children}
    if len(names) == 1:
        return f"Created {_and([kind for kind, _ in children])} {names.pop()}"
    return f"Created {_and([f'{kind} {name}' for kind, name in children])}"


def _refuse_foreign(
    current: Mapping[str, Any] | None, *, owner: Owner, kind: str, name: str
) -> None:
    other = controller_uid(current) if current is not None else None
    if other is not None and other != owner.uid:
        raise StepFailed(
            Problem(
                reason=Reason.CHILD_CONFLICT,
                message=f"{kind} {name} exists and is controlled by another owner"
                f" (uid {other}); delete or rename it",
                stalled=True,
            )
        )


def _version(obj: Mapping[str, Any]) -> str | None:
    version = obj.get("metadata", {}).get("resourceVersion")
    return None if version is None else str(version)


# --- the whole reconcile -------------------------------------------------------------------


def _status(
    *, body: Mapping[str, Any], observed: Observed, now: datetime
) -> tuple[dict[str, Any], bool]:
    current = body.get("status") or {}
    previous = current.get("conditions") or []
    status = {
        "observedGeneration": observed.generation,
        "conditions": compute_conditions(observed=observed, previous=previous, now=now),
    }
    changed = (
        current.get("observedGeneration") != status["observedGeneration"]
        or previous != status["conditions"]
    )
    return status, changed


def _problem_event(body: Mapping[str, Any], problem: Problem) -> list[Event]:
    """A Warning event when a problem is new, not on every retry (events are not free)."""
    ready = find_condition((body.get("status") or {}).get("conditions"), ConditionType.READY)
    if (
        ready is not None
        and ready.get("reason") == problem.reason
        and (ready.get("message") == problem.message)
    ):
        return []
    return [Event(type="Warning", reason=problem.reason, message=problem.message)]


def transition_events(
    previous: Sequence[Mapping[str, Any]] | None, current: Sequence[Mapping[str, Any]]
) -> list[Event]:
    """An event when Ready changes to a state worth telling: available (Normal), suspended
    (Normal), or unavailable / failed (Warning).

    Problems found by a reconcile step have their own Warning (`_problem_event`), and the
    in-between "progressing" state is announced by the Created/Updated events of the rollout.
    A new gap the worker found (EventsLost appears or changes its message) is a Warning too.
    """
    return [*_ready_events(previous, current), *_gap_events(previous, current)]


def _gap_events(
    previous: Sequence[Mapping[str, Any]] | None, current: Sequence[Mapping[str, Any]]
) -> list[Event]:
    old = find_condition(previous, ConditionType.EVENTS_LOST)
    new = find_condition(current, ConditionType.EVENTS_LOST)
    if new is None or (old is not None and old.get("message") == new.get("message")):
        return []
    return [Event(type="Warning", reason=str(new.get("reason")), message=str(new.get("message")))]


def _ready_events(
    previous: Sequence[Mapping[str, Any]] | None, current: Sequence[Mapping[str, Any]]
) -> list[Event]:
    old = find_condition(previous, ConditionType.READY)
    new = find_condition(current, ConditionType.READY)
    if new is None or new.get("reason") in PROBLEM_REASONS:
        return []
    if old is not None and (old.get("status"), old.get("reason")) == (
        new.get("status"),
        new.get("reason"),
    ):
        return []
    reason, message = str(new.get("reason")), str(new.get("message", ""))
    if new.get("status") == "True" or reason == Reason.SUSPENDED:
        return [Event(type="Normal", reason=reason, message=message)]
    if new.get("status") == "False":
        return [Event(type="Warning", reason=reason, message=message)]
    return []


def reconcile(*, body: Mapping[str, Any], ctx: Context) -> Result:
    """Converge the children of `body` and compute its status. Never raises `StepFailed`."""
    generation = int(body.get("metadata", {}).get("generation") or 0)
    suspended = bool((body.get("spec") or {}).get("suspend", False))
    events: list[Event] = []
    problem: Problem | None = None
    worker = WorkerState(phase=WorkerPhase.MISSING, message="Worker not reconciled")
    try:
        owner = owner_of(body)
        spec = validate_spec(body)
        suspended = spec.suspend
        image = resolve_image(spec, ctx.config)
        versions = check_secrets(
            kube_api=ctx.secrets or ctx.kube, namespace=owner.namespace, spec=spec
        )
        desired = desired_children(owner=owner, spec=spec, image=image, secret_versions=versions)
        applied = apply_children(
            kube_api=ctx.kube,
            owner=owner,
            desired=desired,
            observed=ctx.observed,
            first=(body.get("status") or {}).get("observedGeneration") is None,
            on_applied=ctx.applied,
        )
        worker, events = applied.worker, applied.events
        events += report_push(
            kube_api=ctx.kube, body=body, owner=owner, spec=spec, observed=ctx.observed
        )
    except StepFailed as exc:
        problem = exc.problem
        events = [*events, *_problem_event(body, problem)]
    observed = Observed(
        generation=generation,
        suspended=suspended,
        worker=worker,
        problem=problem,
        worker_problem=worker_problem(body.get("status")),
        gap=source_gap(body.get("status")),
    )
    status, changed = _status(body=body, observed=observed, now=ctx.now())
    previous = (body.get("status") or {}).get("conditions")
    events = [*events, *transition_events(previous, status["conditions"])]
    return Result(status=status, status_changed=changed, problem=problem, events=events)


def owning_sync(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the AirflowAssetSync controlling `obj`, if one does."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if (
            ref.get("controller")
            and ref.get("kind") == KIND
            and (str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"))
        ):
            return str(ref["name"]), str(ref["uid"])
    return None


@dataclass(frozen=True, kw_only=True)
class Refreshed:
    """Conditions `refresh_from_deployment` wrote, and the events to post on `sync`."""

    sync: dict[str, Any]
    events: list[Event]
    #: The conditions written (the operator's Ready metric is set from them).
    conditions: list[dict[str, Any]] = field(default_factory=list)
    #: The sync as the write left it (the API server's answer), so the next write computed
    #: in memory starts from it instead of from a version this write made stale.
    written: dict[str, Any] | None = None


def refreshed_conditions(
    *, sync: Mapping[str, Any], worker: WorkerState, now: datetime
) -> list[dict[str, Any]] | None:
    """The conditions `sync` should show with its worker in state `worker`; None when they
    are what it shows, or when they are not this function's to write.

    Pure: both inputs may come from the watches (the sync's last event, the Deployment's
    fingerprint), which is how Ready turns true within a second of the pod becoming ready
    without reading anything. It stands aside while a reconcile problem is reported (the
    problem is the news) and while a spec change is not yet reconciled (that reconcile
    writes status).
    """
    meta = sync.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return None
    status = sync.get("status") or {}
    previous = status.get("conditions") or []
    ready = find_condition(previous, ConditionType.READY)
    if ready is not None and ready.get("reason") in PROBLEM_REASONS:
        return None
    generation = status.get("observedGeneration")
    if generation is None or generation != meta.get("generation"):
        return None
    observed = Observed(
        generation=int(generation),
        suspended=bool((sync.get("spec") or {}).get("suspend", False)),
        worker=worker,
        worker_problem=worker_problem(status),
        gap=source_gap(status),
    )
    new = compute_conditions(observed=observed, previous=previous, now=now)
    return None if new == previous else new


def write_refreshed(
    *, kube_api: KubeApi, sync: Mapping[str, Any], new: list[dict[str, Any]]
) -> Refreshed | None:
    """Write `new` conditions, only onto the version of `sync` they were computed from.

    None when the sync changed or went away since: its newer event recomputes them.
    """
    meta = sync.get("metadata", {})
    version = meta.get("resourceVersion")
    try:
        written = kube_api.patch_sync_status(
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            status={"conditions": new},
            resource_version=None if version is None else str(version),
        )
    except KubeError as exc:
        if exc.status in (404, 409):
            return None
        raise
    previous = (sync.get("status") or {}).get("conditions") or []
    return Refreshed(
        sync=dict(sync),
        events=transition_events(previous, new),
        conditions=new,
        written=dict(written) if isinstance(written, Mapping) else None,
    )


def refresh_from_deployment(
    *,
    kube_api: KubeApi,
    worker: WorkerState,
    namespace: str,
    owner_name: str,
    owner_uid: str,
    now: datetime,
) -> Refreshed | None:
    """Recompute conditions after the worker Deployment changed, reading the sync; None if
    nothing was written. For a sync the watches have not shown yet (`refreshed_conditions`
    otherwise)."""
    sync = _live_sync(kube_api, namespace=namespace, name=owner_name, uid=owner_uid)
    if sync is None:
        return None
    new = refreshed_conditions(sync=sync, worker=worker, now=now)
    if new is None:
        return None
    return write_refreshed(kube_api=kube_api, sync=sync, new=new)


def worker_report_changed(sync: Mapping[str, Any]) -> bool:
    """True when the failures the worker reports in `sync`'s status are not what Ready says.

    Asked on every event of the sync (the worker's status writes among them), so it reads
    only the object: the Deployment is fetched (`refresh_from_worker`) only on a change.
    False while a reconcile problem is shown or a spec change is not reconciled yet: the
    reconcile then writes the conditions, the worker's report included.
    """
    status = sync.get("status") or {}
    ready = find_condition(status.get("conditions"), ConditionType.READY)
    if ready is None or ready.get("reason") in PROBLEM_REASONS:
        return False
    if status.get("observedGeneration") != sync.get("metadata", {}).get("generation"):
        return False
    gap = source_gap(status)
    shown = find_condition(status.get("conditions"), ConditionType.EVENTS_LOST)
    if gap is not None and (shown is None or shown.get("message") != events_lost_message(gap)):
        return True  # a new gap: EventsLost (and its Warning) is due
    reported = worker_problem(status)
    if reported is None:
        return ready.get("reason") in WORKER_REASONS
    return (ready.get("reason"), ready.get("message")) != (reported.reason, reported.message)


def refresh_from_worker(
    *, kube_api: KubeApi, sync: Mapping[str, Any], now: datetime
) -> Refreshed | None:
    """Recompute the conditions of `sync` after its worker reported (or cleared) a failure."""
    meta = sync.get("metadata", {})
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    deployment_body = kube_api.get(
        ChildKind.DEPLOYMENT, namespace=namespace, name=worker_name(name)
    )
    return refresh_from_deployment(
        kube_api=kube_api,
        worker=worker_state(deployment_body),
        namespace=namespace,
        owner_name=name,
        owner_uid=str(meta.get("uid")),
        now=now,
    )


def _live_sync(kube_api: KubeApi, *, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
    """The AirflowAssetSync `uid`, unless it is gone, replaced, or being deleted."""
    sync = kube_api.get_sync(namespace=namespace, name=name)
    if sync is None:
        return None
    meta = sync.get("metadata", {})
    if meta.get("uid") != uid or meta.get("deletionTimestamp"):
        return None
    return sync


@dataclass(frozen=True, kw_only=True)
class OwnerReconciled:
    """A reconcile started from a child's event: the sync it ran on and its result."""

    sync: dict[str, Any]
    result: Result


def reconcile_owner(
    *, ctx: Context, namespace: str, owner_name: str, owner_uid: str
) -> OwnerReconciled | None:
    """Reconcile the sync that owns a deleted or edited child, and write its status.

    What a kopf handler does with kopf's `patch`, done here with the client: the trigger is
    the child's event, not the sync's. None when the sync is gone or being deleted.
    """
    sync = _live_sync(ctx.kube, namespace=namespace, name=owner_name, uid=owner_uid)
    if sync is None:
        return None
    result = reconcile(body=sync, ctx=ctx)
    if result.status_changed:
        ctx.kube.patch_sync_status(namespace=namespace, name=owner_name, status=result.status)
    return OwnerReconciled(sync=sync, result=result)
