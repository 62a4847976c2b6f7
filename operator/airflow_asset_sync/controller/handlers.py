"""kopf handlers: thin adapters from kopf's calls to `reconcile`'s pure-ish functions.

Each handler does three things only: call one function in `reconcile`, hand its status to
kopf's `patch` (or the kube client), post its events, and translate a problem into kopf's
retry vocabulary (`PermanentError` for stalled, `TemporaryError(delay=...)` for waiting).

What triggers a reconcile, and why each is needed:
- create / update (spec changes only) / resume (operator start): the obvious ones;
- a resync every `resync_seconds` (`Resyncer`): puts back a deleted or edited child, rolls the
  worker when a Secret rotates, and retries stalled problems a person may have fixed meanwhile;
- child events (ServiceAccount, Role, RoleBinding, Deployment, Service with our managed-by
  label): a child deleted, or changed by anyone but the operator (`kubectl edit`, `kubectl
  scale`), is put back at once rather than at the next resync; a worker Deployment's status
  change turns Ready true as soon as the pod is ready;
- the sync's own events, when the failure the worker reports in status changed (a wrong
  password, a target down for a minute) or the Deployment's fingerprint says Ready should:
  Ready and Stalled/Reconciling follow at once;
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

The reconcile handlers are sync: the kubernetes client is sync, and kopf runs sync handlers
in a thread pool, so the event loop never blocks on an API call. The watch-event handlers
are async: they note the event in memory (`note_sync_event`, `note_child_event`) on the
loop and send only the API work it calls for to a thread, so thousands of events never
wait, bodies held, behind the reconciles of a burst. kopf never runs two handlers of one
object at once, but a reconcile started by a child's event is another object's handler: a
lock per sync (`SyncLocks`) keeps the reconciles of one sync from overlapping.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from airflow_asset_sync.api.spec import GROUP, PLURAL, VERSION
from airflow_asset_sync.clients.kube import OPERATOR_FIELD_MANAGER, KubeApi, KubeError
from airflow_asset_sync.controller.conditions import worker_state
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.controller.metrics import OperatorMetrics
from airflow_asset_sync.controller.observed import (
    ObservedChildren,
    ObservedSyncs,
    SecretsSeenRecently,
    essential,
)
from airflow_asset_sync.controller.reconcile import (
    Context,
    Event,
    OwnerReconciled,
    Refreshed,
    Result,
    changed_by_others,
    owning_sync,
    reconcile,
    reconcile_owner,
    refresh_from_deployment,
    refresh_from_worker,
    refreshed_conditions,
    worker_report_changed,
    write_refreshed,
)
from airflow_asset_sync.resources.naming import LABEL_MANAGED_BY, MANAGED_BY, worker_name

MEMO_KEY = "runtime"
#: How long a Secret found by one create or update serves the others: a burst of 1,000
#: new syncs that name the same two Secrets reads them a few times, not 2,000 times.
SHARED_SECRET_SECONDS = 2.0
#: Syncs per page of the resync's list.
LIST_PAGE = 100

log = logging.getLogger(__name__)


#: The kinds of child the operator watches (group/version and plural, as kopf takes them).
CHILD_RESOURCES = (
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("apps/v1", "deployments"),
    ("v1", "services"),
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

    The syncs come from `on_sync_event` (kopf's watch of the served namespaces). A round
    lists the syncs of each namespace (`list_namespace`: a request per page of 100, not one
    per sync) and hands each its fresh body (`run_one`); a known sync missing from its
    namespace's list vanished without a watch event reaching us, and is forgotten. If a list
    fails, `run_one` gets None and reads the sync itself. `active` is asked before each
    round: with kopf peering, a standby replica (whose kopf is paused) must not write. Not a
    kopf timer: kopf holds a finalizer on every object a timer runs for.
    """

    def __init__(
        self,
        *,
        interval: float,
        run_one: Callable[[SyncKey, Mapping[str, Any] | None], None],
        list_namespace: Callable[[str, str | None], tuple[list[dict[str, Any]], str | None]]
        | None = None,
        forget: Callable[[SyncKey], None] = lambda key: None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._interval = interval
        self._run_one = run_one
        self._list = list_namespace
        self._forget = forget
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
        """One round; returns how many syncs it reconciled.

        Namespace by namespace, a page of `LIST_PAGE` syncs at a time, so the operator never
        holds more than one page of bodies (a sync's status may carry parked events).
        """
        if not self._active():
            return 0
        by_namespace: dict[str, dict[str, SyncKey]] = {}
        for key in self.known():
            by_namespace.setdefault(key.namespace, {})[key.uid] = key
        done = 0
        for namespace, pending in sorted(by_namespace.items()):
            try:
                for page in self._pages(namespace):
                    for body in page:
                        if self._stop.is_set():
                            return done  # the unreached ones are still known
                        listed = pending.pop(str(body.get("metadata", {}).get("uid", "")), None)
                        if listed is not None:
                            done += self._run(listed, body)
            except Exception as exc:  # the rest are read one by one
                log.warning(f"resync: listing the syncs of {namespace} failed: {exc}")
                for key in pending.values():
                    done += self._run(key, None)
            else:  # a known sync missing from a complete list vanished unseen
                for key in pending.values():
                    self.gone(key.uid)
                    self._forget(key)
        return done

    def _pages(self, namespace: str) -> Iterator[list[dict[str, Any]]]:
        if self._list is None:  # nothing to list with: each is read on its own
            raise LookupError(f"no list of {namespace}")
        token: str | None = None
        while True:
            items, token = self._list(namespace, token)
            yield items
            if not token:
                return

    def _run(self, key: SyncKey, body: Mapping[str, Any] | None) -> int:
        with self._guard:
            context = self._context.copy() if self._context is not None else None
        try:
            if context is None:
                self._run_one(key, body)
            else:
                context.run(self._run_one, key, body)
        except Exception:
            log.exception("resync of %s/%s failed", key.namespace, key.name)
            return 0
        return 1

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

    kube: KubeApi
    config: OperatorConfig
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    locks: SyncLocks = field(default_factory=SyncLocks)
    #: False while this replica must not write (a kopf peering standby); see `Resyncer`.
    active: Callable[[], bool] = field(default=lambda: True)
    #: The watches' fingerprints of every child (`controller.observed`).
    children: ObservedChildren = field(default_factory=ObservedChildren)
    #: Each served sync as its last watch event showed it.
    syncs: ObservedSyncs = field(default_factory=ObservedSyncs)
    #: What `/metrics` serves (`on_startup`): one registry per runtime.
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    resyncer: Resyncer = field(init=False)
    #: Secrets as the resync reads them: each at most once per half interval.
    resync_secrets: SecretsSeenRecently = field(init=False)
    #: Secrets as creates and updates read them: found ones shared for a moment.
    secrets: SecretsSeenRecently = field(init=False)

    def __post_init__(self) -> None:
        resyncer = Resyncer(
            interval=self.config.resync_seconds,
            run_one=lambda key, body: resync_one(self, key, body),
            list_namespace=lambda namespace, token: self.kube.list_syncs(
                namespace=namespace, limit=LIST_PAGE, continue_token=token
            ),
            forget=lambda key: self.metrics.forget_sync(namespace=key.namespace, name=key.name),
            active=self.active,
        )
        object.__setattr__(self, "resyncer", resyncer)
        secrets = SecretsSeenRecently(self.kube, max_age_seconds=self.config.resync_seconds / 2)
        object.__setattr__(self, "resync_secrets", secrets)
        shared = SecretsSeenRecently(
            self.kube, max_age_seconds=SHARED_SECRET_SECONDS, remember_missing=False
        )
        object.__setattr__(self, "secrets", shared)

    @property
    def context(self) -> Context:
        return self._context(self.secrets)

    @property
    def resync_context(self) -> Context:
        return self._context(self.resync_secrets)

    def _context(self, secrets: SecretsSeenRecently) -> Context:
        return Context(
            kube=self.kube,
            config=self.config,
            now=self.now,
            observed=self.children,
            secrets=secrets,
            applied=self.children.record,
        )


def _runtime(memo: Any) -> Runtime:
    runtime = memo[MEMO_KEY]
    assert isinstance(runtime, Runtime)
    return runtime


def _post(body: Mapping[str, Any], events: Iterable[Event]) -> None:
    target = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, body))
    for event in events:
        kopf.event(target, type=event.type, reason=event.reason, message=event.message)


def _run(trigger: str, *, body: kopf.Body, patch: kopf.Patch, runtime: Runtime) -> Result:
    uid = str(body.get("metadata", {}).get("uid", ""))
    with runtime.metrics.observe(trigger) as outcome, runtime.locks(uid):
        result = reconcile(body=body, ctx=runtime.context)
        if result.problem is not None:
            outcome.problem(result.problem.reason)
    meta = body.get("metadata", {})
    runtime.metrics.record_ready(
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


def resync_one(runtime: Runtime, key: SyncKey, body: Mapping[str, Any] | None = None) -> None:
    """Re-converge one sync (the resync's unit of work).

    `body` is the sync as the round's list showed it (None: read it here). Its children are
    checked against the watches' fingerprints, so a sync that is as it should be costs no
    request but its share of the round's list and Secret reads.
    """
    ctx = runtime.resync_context
    with runtime.metrics.observe("resync") as outcome, runtime.locks(key.uid):
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            done = reconcile_owner(
                ctx=ctx, namespace=key.namespace, owner_name=key.name, owner_uid=key.uid
            )
        else:
            done = _resync_from(ctx, body, key)
        if done is not None and done.result.problem is not None:
            outcome.problem(done.result.problem.reason)
    if done is None:
        runtime.resyncer.gone(key.uid)  # deleted or replaced since its last event
        runtime.metrics.forget_sync(namespace=key.namespace, name=key.name)
        return
    runtime.metrics.record_ready(
        namespace=key.namespace, name=key.name, conditions=done.result.status["conditions"]
    )
    _post(done.sync, done.result.events)
    problem = done.result.problem
    if problem is not None:
        # Problems are already in status and events; just log them.
        log.info(f"Resync {key.namespace}/{key.name}: {problem.reason}: {problem.message}")


def _resync_from(ctx: Context, body: Mapping[str, Any], key: SyncKey) -> OwnerReconciled | None:
    """Reconcile `body` and write its status if that changed; None if the sync is gone."""
    result = reconcile(body=body, ctx=ctx)
    if result.status_changed:
        try:
            ctx.kube.patch_sync_status(namespace=key.namespace, name=key.name, status=result.status)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
    return OwnerReconciled(sync=dict(body), result=result)


#: Work left for a thread after a watch event was noted in memory (an API call or two).
FollowUp = Callable[[], None]


def note_sync_event(runtime: Runtime, *, type: str | None, body: kopf.Body) -> FollowUp | None:
    """Note a sync's event in memory; return the API work it calls for, if any.

    Keeps `Resyncer`'s list and the sync's copy current, and turns a failure the worker
    reported (or cleared) in status, or a rollout the Deployment's fingerprint shows, into
    conditions. Nothing is deleted here: the garbage collector deletes the children
    through their owner references.
    """
    meta = body.get("metadata", {})
    uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
    if not uid or not namespace or not name:
        return None
    uid, namespace, name = str(uid), str(namespace), str(name)
    resyncer = runtime.resyncer
    if type == "DELETED" or meta.get("deletionTimestamp"):
        resyncer.gone(uid)
        runtime.syncs.record(body, deleted=True)
        runtime.metrics.forget_sync(namespace=namespace, name=name)
        return None
    runtime.syncs.record(body)
    resyncer.seen(
        SyncKey(namespace=namespace, name=name, uid=uid), context=contextvars.copy_context()
    )
    if not runtime.active():
        return None
    worker = runtime.children("Deployment", namespace, worker_name(name))
    if worker is not None and worker.worker is not None:
        # Both halves in memory: this event's sync, the Deployment's fingerprint.
        new = refreshed_conditions(sync=body, worker=worker.worker, now=runtime.now())
        if new is None:
            return None
        return _write_later(runtime, essential(body), new, trigger="sync-event")
    if not worker_report_changed(body):
        return None
    sync = essential(body)

    def refresh() -> None:
        with runtime.metrics.observe("worker-report"), runtime.locks(uid):
            refreshed = refresh_from_worker(kube_api=runtime.kube, sync=sync, now=runtime.now())
        _announce(runtime, refreshed)

    return refresh


def note_child_event(
    runtime: Runtime, *, type: str | None, body: kopf.Body, namespace: str | None
) -> FollowUp | None:
    """Note a child's event in memory; return the API work it calls for, if any.

    Deleted, or last changed by someone other than the operator: reconcile its sync now (the
    reconcile's own writes come back as events too, but a no-op apply changes nothing, so
    this settles). A worker Deployment whose status changed: recompute the conditions.
    """
    owner = owning_sync(body)
    if owner is None or namespace is None:
        return None
    name, uid = owner
    deleted = type == "DELETED"
    runtime.children.record(body, deleted=deleted)
    if deleted or changed_by_others(body, field_manager=OPERATOR_FIELD_MANAGER):
        return lambda: _reconcile_for_child(runtime, namespace=namespace, name=name, uid=uid)
    if body.get("kind") != "Deployment":
        return None
    worker = worker_state(body)
    sync = runtime.syncs(uid)
    if sync is None:  # not shown by the watch yet: read it

        def read_and_refresh() -> None:
            with runtime.metrics.observe("worker-event"), runtime.locks(uid):
                refreshed = refresh_from_deployment(
                    kube_api=runtime.kube,
                    worker=worker,
                    namespace=namespace,
                    owner_name=name,
                    owner_uid=uid,
                    now=runtime.now(),
                )
            _announce(runtime, refreshed)

        return read_and_refresh
    new = refreshed_conditions(sync=sync, worker=worker, now=runtime.now())
    if new is None:
        return None
    return _write_later(runtime, sync, new, trigger="worker-event")


def _write_later(
    runtime: Runtime, sync: dict[str, Any], new: list[dict[str, Any]], *, trigger: str
) -> FollowUp:
    """The follow-up that writes conditions computed in memory onto `sync`'s version.

    It may wait behind other follow-ups of the same sync. If by then a newer version of the
    sync is known (a watch event, or a write of the operator's own, recorded at once), the
    conditions are recomputed from that version and the Deployment's current fingerprint,
    and nothing is written if they already show: writing onto the old version could only
    be refused (409), one wasted request per race, and a rollout of 1,000 syncs had 600.
    """
    uid = str(sync.get("metadata", {}).get("uid", ""))

    def write() -> None:
        with runtime.metrics.observe(trigger), runtime.locks(uid):
            onto, conditions_now = _freshest(runtime, sync, new)
            if conditions_now is None:
                return
            refreshed = write_refreshed(kube_api=runtime.kube, sync=onto, new=conditions_now)
            if refreshed is not None and refreshed.written is not None:
                runtime.syncs.record(refreshed.written)
        _announce(runtime, refreshed)

    return write


def _freshest(
    runtime: Runtime, sync: dict[str, Any], new: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """(`sync`, `new`) if `sync` is still the newest version known; otherwise the newest
    version and its conditions recomputed (None: nothing to write)."""
    meta = sync.get("metadata", {})
    latest = runtime.syncs(str(meta.get("uid", "")))
    if latest is None or latest.get("metadata", {}).get("resourceVersion") == meta.get(
        "resourceVersion"
    ):
        return sync, new
    child = runtime.children(
        "Deployment", str(meta.get("namespace")), worker_name(str(meta.get("name")))
    )
    if child is None or child.worker is None:
        return latest, None  # the Deployment went: its event reconciles the sync
    return latest, refreshed_conditions(sync=latest, worker=child.worker, now=runtime.now())


def _reconcile_for_child(runtime: Runtime, *, namespace: str, name: str, uid: str) -> None:
    with runtime.metrics.observe("child-event") as outcome, runtime.locks(uid):
        done = reconcile_owner(
            ctx=runtime.context, namespace=namespace, owner_name=name, owner_uid=uid
        )
        if done is not None and done.result.problem is not None:
            outcome.problem(done.result.problem.reason)
    if done is not None:
        runtime.metrics.record_ready(
            namespace=namespace, name=name, conditions=done.result.status["conditions"]
        )
        _post(done.sync, done.result.events)


def _announce(runtime: Runtime, refreshed: Refreshed | None) -> None:
    if refreshed is None:
        return
    meta = refreshed.sync.get("metadata", {})
    runtime.metrics.record_ready(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        conditions=refreshed.conditions,
    )
    _post(refreshed.sync, refreshed.events)


def on_sync_event(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """`note_sync_event`, and its follow-up in this thread (for callers without a loop)."""
    follow_up = note_sync_event(_runtime(memo), type=type, body=body)
    if follow_up is not None:
        follow_up()


def on_child_event(
    *, type: str | None, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    """`note_child_event`, and its follow-up in this thread (for callers without a loop)."""
    follow_up = note_child_event(_runtime(memo), type=type, body=body, namespace=namespace)
    if follow_up is not None:
        follow_up()


async def on_sync_event_async(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """The kopf handler: noted on the event loop at once, API work in a thread.

    Async on purpose: a sync handler waits for a free thread of kopf's pool, behind every
    create being reconciled, and each waiting event holds its whole body. 1,000 new syncs
    are 5,000 objects' events; most need no request at all.
    """
    follow_up = note_sync_event(_runtime(memo), type=type, body=body)
    if follow_up is not None:
        await asyncio.to_thread(follow_up)


async def on_child_event_async(
    *, type: str | None, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    """The kopf handler of children's events; see `on_sync_event_async`."""
    follow_up = note_child_event(_runtime(memo), type=type, body=body, namespace=namespace)
    if follow_up is not None:
        await asyncio.to_thread(follow_up)


def on_startup(*, memo: Any, logger: logging.Logger | Any, **_: Any) -> None:
    runtime = _runtime(memo)
    runtime.metrics.serve(port=runtime.config.metrics_port)
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
    resource = (GROUP, VERSION, PLURAL)
    kopf.on.login(registry=registry)(on_login)
    kopf.on.startup(registry=registry)(on_startup)
    kopf.on.cleanup(registry=registry)(on_cleanup)
    kopf.on.resume(*resource, registry=registry, id="reconcile")(on_change)
    kopf.on.create(*resource, registry=registry, id="reconcile")(on_change)
    # Only spec changes: status and metadata churn must not re-run the reconcile.
    kopf.on.update(*resource, field="spec", registry=registry, id="reconcile")(on_change)
    # No on.delete, no kopf.timer: either would make kopf hold a finalizer (module docstring).
    kopf.on.event(*resource, registry=registry, id="track")(on_sync_event_async)
    for group_version, plural in CHILD_RESOURCES:
        kopf.on.event(
            group_version,
            plural,
            labels={LABEL_MANAGED_BY: MANAGED_BY},
            registry=registry,
            id=f"child-{plural}",
        )(on_child_event_async)
    return registry
