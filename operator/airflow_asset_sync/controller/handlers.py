"""kopf handlers: thin adapters from kopf's calls to `reconcile`'s pure-ish functions.

Each handler does three things only: call one function in `reconcile`, hand its status to
kopf's `patch` (or the kube client), post its events, and translate a problem into kopf's
retry vocabulary (`PermanentError` for stalled, `TemporaryError(delay=...)` for waiting).

What triggers a reconcile, and why each is needed:
- create / update (spec changes only) / resume (operator start): the obvious ones;
- a resync every `resync_seconds` (`Resyncer`): puts back a deleted or edited child, rolls the
  worker when a Secret rotates, and retries stalled problems a person may have fixed meanwhile;
- child events (ServiceAccount, Role, RoleBinding, Deployment with our managed-by label): a
  child deleted, or changed by anyone but the operator (`kubectl edit`, `kubectl scale`), is
  put back at once rather than at the next resync; a worker Deployment's status change turns
  Ready true as soon as the pod is ready;
- the sync's own events, when the failure the worker reports in status changed (a wrong
  password, a target down for a minute): Ready and Stalled/Reconciling follow at once;
- delete: nothing. Every child carries a controller owner reference (with
  `blockOwnerDeletion`), so the cluster's garbage collector deletes it with its sync, whether
  or not the operator runs.

No finalizer. A finalizer would make every sync, and so its namespace, undeletable while the
operator is absent (after `helm uninstall`, or while it crash-loops), and it earns nothing the
owner references do not already do. kopf adds its finalizer for a non-optional `on.delete`
handler and for any `kopf.timer` or `kopf.daemon` (it cannot stop those otherwise), so the
periodic resync is not a kopf timer but `Resyncer`, fed by a finalizer-free `on.event`
handler. Objects that still carry the finalizer of an earlier version lose it on the
operator's first pass over them (kopf removes its own finalizer, by the name kept in
`entrypoint.LEGACY_FINALIZER`, from objects no handler needs it on), deleting ones included.

Handlers are sync: the kubernetes client is sync, and kopf runs sync handlers in a thread
pool, so the event loop never blocks on an API call. kopf never runs two handlers of one
object at once, but a reconcile started by a child's event is another object's handler: a
lock per sync (`SyncLocks`) keeps the reconciles of one sync from overlapping.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import weakref
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

log = logging.getLogger(__name__)


#: The kinds of child the operator watches (group/version and plural, as kopf takes them).
CHILD_RESOURCES = (
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("apps/v1", "deployments"),
)


class SyncLocks:
    """One lock per AirflowAssetSync (by uid), so its reconciles never overlap.

    Held weakly: a lock lives while someone holds or waits on it, so the locks of deleted
    syncs go away without a delete handler to forget them.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = (
            weakref.WeakValueDictionary()
        )

    def __call__(self, uid: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(uid)
            if lock is None:
                lock = self._locks[uid] = threading.Lock()
            return lock

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


@dataclass(frozen=True)
class SyncKey:
    namespace: str
    name: str
    uid: str


class Resyncer:
    """Re-converges every sync this operator serves, every `interval` seconds, in a thread.

    The syncs come from `on_sync_event` (kopf's watch of the served namespaces); `run_one`
    reconciles one. `active` is asked before each round: with kopf peering, a standby replica
    (whose kopf is paused) must not write. Not a kopf timer: kopf holds a finalizer on every
    object a timer runs for.
    """

    def __init__(
        self,
        *,
        interval: float,
        run_one: Callable[[SyncKey], None],
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._interval = interval
        self._run_one = run_one
        self._active = active
        self._guard = threading.Lock()
        self._known: dict[str, SyncKey] = {}
        #: The context of a kopf handler: kopf's event queue lives in context variables, and
        #: `kopf.event` from this thread needs them.
        self._context: contextvars.Context | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def seen(self, key: SyncKey, *, context: contextvars.Context | None = None) -> None:
        with self._guard:
            self._known[key.uid] = key
            if context is not None:
                self._context = context

    def gone(self, uid: str) -> None:
        with self._guard:
            self._known.pop(uid, None)

    def known(self) -> list[SyncKey]:
        with self._guard:
            return sorted(self._known.values(), key=lambda k: (k.namespace, k.name))

    def run_once(self) -> int:
        """One round; returns how many syncs it reconciled."""
        if not self._active():
            return 0
        done = 0
        for key in self.known():
            if self._stop.is_set():
                break
            with self._guard:
                context = self._context.copy() if self._context is not None else None
            try:
                if context is None:
                    self._run_one(key)
                else:
                    context.run(self._run_one, key)
                done += 1
            except Exception:
                log.exception("resync of %s/%s failed", key.namespace, key.name)
        return done

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="resync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def _loop(self) -> None:
        # Create/resume just reconciled every sync: the first round can wait one interval.
        while not self._stop.wait(self._interval):
            self.run_once()


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Process-wide dependencies, handed to handlers through kopf's memo."""

    kube: kube.KubeApi
    config: OperatorConfig
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    locks: SyncLocks = field(default_factory=SyncLocks)
    #: False while this replica must not write (a kopf peering standby); see `Resyncer`.
    active: Callable[[], bool] = field(default=lambda: True)
    resyncer: Resyncer = field(init=False)

    def __post_init__(self) -> None:
        resyncer = Resyncer(
            interval=self.config.resync_seconds,
            run_one=lambda key: resync_one(self, key),
            active=self.active,
        )
        object.__setattr__(self, "resyncer", resyncer)

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
    meta = body.get("metadata", {})
    metrics.record_ready(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        conditions=result.status["conditions"],
    )
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


def resync_one(runtime: Runtime, key: SyncKey) -> None:
    """Re-converge one sync from its live object (the resync's unit of work)."""
    with metrics.observe("resync") as outcome, runtime.locks(key.uid):
        done = reconcile.reconcile_owner(
            ctx=runtime.context, namespace=key.namespace, owner_name=key.name, owner_uid=key.uid
        )
        if done is not None and done.result.problem is not None:
            outcome.problem(done.result.problem.reason)
    if done is None:
        runtime.resyncer.gone(key.uid)  # deleted or replaced since its last event
        metrics.forget_sync(namespace=key.namespace, name=key.name)
        return
    metrics.record_ready(
        namespace=key.namespace, name=key.name, conditions=done.result.status["conditions"]
    )
    _post(done.sync, done.result.events)
    problem = done.result.problem
    if problem is not None:
        # Problems are already in status and events; just log them.
        log.info(f"Resync {key.namespace}/{key.name}: {problem.reason}: {problem.message}")


def on_sync_event(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Every event of a served sync: keep `Resyncer`'s list of syncs current, and turn a
    failure the worker reported (or cleared) in status into conditions at once.

    An `on.event` handler, so kopf holds no finalizer for it. Nothing is deleted here: the
    garbage collector deletes the children through their owner references.
    """
    meta = body.get("metadata", {})
    uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
    if not uid or not namespace or not name:
        return
    runtime = _runtime(memo)
    resyncer = runtime.resyncer
    if type == "DELETED" or meta.get("deletionTimestamp"):
        resyncer.gone(str(uid))
        metrics.forget_sync(namespace=str(namespace), name=str(name))
        return
    key = SyncKey(namespace=str(namespace), name=str(name), uid=str(uid))
    resyncer.seen(key, context=contextvars.copy_context())
    if runtime.active() and reconcile.worker_report_changed(body):
        with metrics.observe("worker-report"), runtime.locks(str(uid)):
            refreshed = reconcile.refresh_from_worker(
                kube_api=runtime.kube, sync=body, now=runtime.now()
            )
        if refreshed is not None:
            metrics.record_ready(
                namespace=str(namespace), name=str(name), conditions=refreshed.conditions
            )
            _post(refreshed.sync, refreshed.events)


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
            metrics.record_ready(
                namespace=namespace, name=name, conditions=done.result.status["conditions"]
            )
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
        metrics.record_ready(namespace=namespace, name=name, conditions=refreshed.conditions)
        _post(refreshed.sync, refreshed.events)


def on_startup(*, memo: Any, logger: logging.Logger | Any, **_: Any) -> None:
    runtime = _runtime(memo)
    metrics.serve(port=runtime.config.metrics_port)
    runtime.resyncer.start()
    if runtime.config.worker_image is None:
        logger.warning("AAS_WORKER_IMAGE is unset: syncs without spec.worker.image will stall")


def on_cleanup(*, memo: Any, **_: Any) -> None:
    _runtime(memo).resyncer.stop()


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
    kopf.on.cleanup(registry=registry)(on_cleanup)
    kopf.on.resume(*resource, registry=registry, id="reconcile")(on_change)
    kopf.on.create(*resource, registry=registry, id="reconcile")(on_change)
    # Only spec changes: status and metadata churn must not re-run the reconcile.
    kopf.on.update(*resource, field="spec", registry=registry, id="reconcile")(on_change)
    # No on.delete, no kopf.timer: either would make kopf hold a finalizer (module docstring).
    kopf.on.event(*resource, registry=registry, id="track")(on_sync_event)
    for group_version, plural in CHILD_RESOURCES:
        kopf.on.event(
            group_version,
            plural,
            labels={naming.LABEL_MANAGED_BY: naming.MANAGED_BY},
            registry=registry,
            id=f"child-{plural}",
        )(on_child_event)
    return registry
