"""kopf handlers: thin adapters from kopf's calls to `reconcile`'s pure-ish functions.

Each handler does three things only: call one function in `reconcile`, hand its status to
kopf's `patch` (or the kube client), post its events, and translate a problem into kopf's
retry vocabulary (`PermanentError` for stalled, `TemporaryError(delay=...)` for waiting).

What triggers a reconcile, and why each is needed:
- create / update (spec changes only) / resume (operator start): the obvious ones;
- a timer every `resync_seconds`: puts back a deleted or edited child, rolls the worker when a
  Secret rotates, and retries stalled problems a person may have fixed meanwhile;
- child events (ServiceAccount, Role, RoleBinding, Deployment with our managed-by label): a
  child deleted, or changed by anyone but the operator (`kubectl edit`, `kubectl scale`), is
  put back at once rather than at the next resync; a worker Deployment's status change turns
  Ready true as soon as the pod is ready;
- delete: removes the children explicitly (a bare API server has no garbage collector). kopf
  holds a finalizer for this, so it also runs after an operator restart.

Handlers are sync: the kubernetes client is sync, and kopf runs sync handlers in a thread
pool, so the event loop never blocks on an API call. kopf never runs two handlers of one
object at once, but a reconcile started by a child's event is another object's handler: a
lock per sync (`SyncLocks`) keeps the reconciles of one sync from overlapping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.clients import kube
from airflow_asset_sync.controller import metrics, reconcile
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.resources import naming

MEMO_KEY = "runtime"


#: The kinds of child the operator watches (group/version and plural, as kopf takes them).
CHILD_RESOURCES = (
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("apps/v1", "deployments"),
)


class SyncLocks:
    """One lock per AirflowAssetSync (by uid), so its reconciles never overlap."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Process-wide dependencies, handed to handlers through kopf's memo."""

    kube: kube.KubeApi
    config: OperatorConfig
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    locks: SyncLocks = field(default_factory=SyncLocks)

    @property
    def context(self) -> reconcile.Context:
        return reconcile.Context(kube=self.kube, config=self.config, now=self.now)


def _runtime(memo: Any) -> Runtime:
    runtime = memo[MEMO_KEY]
    assert isinstance(runtime, Runtime)
    return runtime


def _post(body: Mapping[str, Any], events: Iterable[reconcile.Event]) -> None:
    target = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, body))
    for event in events:
        kopf.event(target, type=event.type, reason=event.reason, message=event.message)


def _run(trigger: str, *, body: kopf.Body, patch: kopf.Patch, runtime: Runtime) -> reconcile.Result:
    uid = str(body.get("metadata", {}).get("uid", ""))
    with metrics.observe(trigger) as outcome, runtime.locks(uid):
        result = reconcile.reconcile(body=body, ctx=runtime.context)
        if result.problem is not None:
            outcome.problem(result.problem.reason)
    if result.status_changed:
        patch.status["observedGeneration"] = result.status["observedGeneration"]
        patch.status["conditions"] = result.status["conditions"]
    _post(body, result.events)
    return result


def on_change(*, body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
    """create / update / resume: reconcile, and retry problems the way kopf understands."""
    runtime = _runtime(memo)
    result = _run("change", body=body, patch=patch, runtime=runtime)
    problem = result.problem
    if problem is None:
        return
    if problem.stalled:
        raise kopf.PermanentError(f"{problem.reason}: {problem.message}")
    raise kopf.TemporaryError(
        f"{problem.reason}: {problem.message}", delay=runtime.config.retry_delay_seconds(retry)
    )


def on_resync(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: logging.Logger | Any, **_: Any
) -> None:
    """Timer: re-converge. Problems are already in status and events; just log them."""
    result = _run("resync", body=body, patch=patch, runtime=_runtime(memo))
    if result.problem is not None:
        logger.info(f"Resync: {result.problem.reason}: {result.problem.message}")


def on_delete(*, body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """Delete the children; kopf removes its finalizer once this returns."""
    runtime = _runtime(memo)
    owner = reconcile.owner_of(body)
    with metrics.observe("delete"), runtime.locks(owner.uid):
        try:
            events = reconcile.cleanup(kube_api=runtime.kube, owner=owner)
        except kube.KubeError as exc:
            raise kopf.TemporaryError(
                f"Cleanup failed: {exc}", delay=runtime.config.retry_delay_seconds(retry)
            ) from exc
    runtime.locks.forget(owner.uid)
    _post(body, events)


def on_child_event(
    *, type: str | None, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    """A child changed: put it back if it was deleted or edited, else refresh Ready.

    Deleted, or last changed by someone other than the operator: reconcile its sync now (the
    reconcile's own writes come back as events too, but a no-op apply changes nothing, so
    this settles). A worker Deployment whose status changed: recompute the conditions.
    """
    owner = reconcile.owning_sync(body)
    if owner is None or namespace is None:
        return
    name, uid = owner
    runtime = _runtime(memo)
    deleted = type == "DELETED"
    if deleted or reconcile.changed_by_others(body, field_manager=kube.OPERATOR_FIELD_MANAGER):
        with metrics.observe("child-event") as outcome, runtime.locks(uid):
            done = reconcile.reconcile_owner(
                ctx=runtime.context, namespace=namespace, owner_name=name, owner_uid=uid
            )
            if done is not None and done.result.problem is not None:
                outcome.problem(done.result.problem.reason)
        if done is not None:
            _post(done.sync, done.result.events)
        return
    if body.get("kind") != "Deployment":
        return
    with metrics.observe("worker-event"), runtime.locks(uid):
        refreshed = reconcile.refresh_from_deployment(
            kube_api=runtime.kube,
            deployment_body=body,
            namespace=namespace,
            owner_name=name,
            owner_uid=uid,
            now=runtime.now(),
        )
    if refreshed is not None:
        _post(refreshed.sync, refreshed.events)


def on_startup(*, memo: Any, logger: logging.Logger | Any, **_: Any) -> None:
    runtime = _runtime(memo)
    metrics.serve(port=runtime.config.metrics_port)
    if runtime.config.worker_image is None:
        logger.warning("AAS_WORKER_IMAGE is unset: syncs without spec.worker.image will stall")


def on_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials for kopf's own API client: in-cluster first, else the kubeconfig.

    kopf registers its default login handlers in its global registry only; an operator with a
    registry of its own has none and fails at start with "Ran out of valid credentials".
    """
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry of our own (not kopf's global one), so tests and embedders get no strays.

    Being our own, it must carry a login handler too (`on_login`).
    """
    registry = kopf.OperatorRegistry()
    resource = (api.GROUP, api.VERSION, api.PLURAL)
    kopf.on.login(registry=registry)(on_login)
    kopf.on.startup(registry=registry)(on_startup)
    kopf.on.resume(*resource, registry=registry, id="reconcile")(on_change)
    kopf.on.create(*resource, registry=registry, id="reconcile")(on_change)
    # Only spec changes: status and metadata churn must not re-run the reconcile.
    kopf.on.update(*resource, field="spec", registry=registry, id="reconcile")(on_change)
    kopf.on.delete(*resource, registry=registry, id="cleanup")(on_delete)
    kopf.timer(
        *resource,
        interval=config.resync_seconds,
        # Create/resume just reconciled: the first resync can wait one interval.
        initial_delay=config.resync_seconds,
        registry=registry,
        id="resync",
    )(on_resync)
    for group_version, plural in CHILD_RESOURCES:
        kopf.on.event(
            group_version,
            plural,
            labels={naming.LABEL_MANAGED_BY: naming.MANAGED_BY},
            registry=registry,
            id=f"child-{plural}",
        )(on_child_event)
    return registry
