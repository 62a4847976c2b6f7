"""kopf handlers: thin adapters from kopf's calls to `reconcile`'s pure-ish functions.

Each handler does three things only: call one function in `reconcile`, hand its status to
kopf's `patch` (or the kube client), post its events, and translate a problem into kopf's
retry vocabulary (`PermanentError` for stalled, `TemporaryError(delay=...)` for waiting).

What triggers a reconcile, and why each is needed:
- create / update (spec changes only) / resume (operator start): the obvious ones;
- a timer every `resync_seconds`: puts back a deleted or edited child, rolls the worker when a
  Secret rotates, and retries stalled problems a person may have fixed meanwhile;
- worker Deployment events: turn Ready true as soon as the pod is ready, not at the next
  resync;
- delete: removes the children explicitly (a bare API server has no garbage collector). kopf
  holds a finalizer for this, so it also runs after an operator restart.

Handlers are sync: the kubernetes client is sync, and kopf runs sync handlers in a thread
pool, so the event loop never blocks on an API call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.clients import kube
from airflow_asset_sync.controller import metrics, reconcile
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.resources import naming

MEMO_KEY = "runtime"


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Process-wide dependencies, handed to handlers through kopf's memo."""

    kube: kube.KubeApi
    config: OperatorConfig
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def context(self) -> reconcile.Context:
        return reconcile.Context(kube=self.kube, config=self.config, now=self.now)


def _runtime(memo: Any) -> Runtime:
    runtime = memo[MEMO_KEY]
    assert isinstance(runtime, Runtime)
    return runtime


def _post(body: kopf.Body, events: Iterable[reconcile.Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _run(trigger: str, *, body: kopf.Body, patch: kopf.Patch, runtime: Runtime) -> reconcile.Result:
    with metrics.observe(trigger) as outcome:
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
    with metrics.observe("delete"):
        try:
            events = reconcile.cleanup(kube_api=runtime.kube, owner=reconcile.owner_of(body))
        except kube.KubeError as exc:
            raise kopf.TemporaryError(
                f"Cleanup failed: {exc}", delay=runtime.config.retry_delay_seconds(retry)
            ) from exc
    _post(body, events)


def on_worker_event(
    *, type: str | None, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    """A worker Deployment changed: refresh its sync's conditions (see `reconcile`)."""
    owner = reconcile.owning_sync(body)
    if owner is None or namespace is None:
        return
    runtime = _runtime(memo)
    with metrics.observe("worker-event"):
        reconcile.refresh_from_deployment(
            kube_api=runtime.kube,
            deployment_body=None if type == "DELETED" else body,
            namespace=namespace,
            owner_name=owner[0],
            owner_uid=owner[1],
            now=runtime.now(),
        )


def on_startup(*, memo: Any, logger: logging.Logger | Any, **_: Any) -> None:
    runtime = _runtime(memo)
    metrics.serve(port=runtime.config.metrics_port)
    if runtime.config.worker_image is None:
        logger.warning("AAS_WORKER_IMAGE is unset: syncs without spec.worker.image will stall")


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry of our own (not kopf's global one), so tests and embedders get no strays."""
    registry = kopf.OperatorRegistry()
    resource = (api.GROUP, api.VERSION, api.PLURAL)
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
    kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={naming.LABEL_MANAGED_BY: naming.MANAGED_BY},
        registry=registry,
        id="worker-rollout",
    )(on_worker_event)
    return registry
