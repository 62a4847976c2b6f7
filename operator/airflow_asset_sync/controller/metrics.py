"""Prometheus metrics of the operator: reconciles, their outcome and duration.

A registry of its own rather than prometheus-client's global one: the worker has metrics too,
and a process that imports both (the local `run` mode, tests) must not collide on names or
export the other's series. Process metrics are added explicitly.

Label values are small fixed sets (trigger, result, reason), never object names, with one
exception: `SYNC_READY`, one series per AirflowAssetSync this operator serves. That is the
per-sync Ready signal a dashboard and an alert need, bounded by the number of syncs (not by
events, assets or time), and removed when its sync is deleted (`forget_sync`). It carries no
reason label: a reason per series would multiply them and churn on every transition; the
reason is in the object's condition and its events.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import prometheus_client as prom

REGISTRY = prom.CollectorRegistry(auto_describe=True)
prom.ProcessCollector(registry=REGISTRY)
prom.PlatformCollector(registry=REGISTRY)

RECONCILES = prom.Counter(
    "airflow_asset_sync_operator_reconciles",
    "Reconciles of AirflowAssetSync objects, by trigger and result.",
    ["trigger", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = prom.Counter(
    "airflow_asset_sync_operator_reconcile_errors",
    "Reconciles that found a problem, by condition reason (e.g. SecretNotFound).",
    ["reason"],
    registry=REGISTRY,
)
RECONCILE_DURATION = prom.Histogram(
    "airflow_asset_sync_operator_reconcile_duration_seconds",
    "Wall time of one reconcile, API calls included.",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

#: Labelled `sync_namespace` and `sync`, not `namespace`: a scrape (the chart's ServiceMonitor)
#: attaches the operator's own namespace as `namespace`, which would rename ours to
#: `exported_namespace`. `sync` is the object's name, as kube-state-metrics' config names it.
SYNC_READY = prom.Gauge(
    "airflow_asset_sync_operator_sync_ready",
    "1 while the AirflowAssetSync's Ready condition is True, else 0 (False or Unknown).",
    ["sync_namespace", "sync"],
    registry=REGISTRY,
)


def ready_value(conditions: Iterable[Mapping[str, Any]] | None) -> float:
    """1.0 when the conditions hold ``Ready=True``, else 0.0 (no Ready condition included)."""
    for condition in conditions or ():
        if condition.get("type") == "Ready":
            return 1.0 if condition.get("status") == "True" else 0.0
    return 0.0


def record_ready(
    *, namespace: str, name: str, conditions: Iterable[Mapping[str, Any]] | None
) -> None:
    """Set the sync's Ready series from the conditions the operator just computed."""
    SYNC_READY.labels(sync_namespace=namespace, sync=name).set(ready_value(conditions))


def forget_sync(*, namespace: str, name: str) -> None:
    """Remove the sync's Ready series (the sync is deleted); a no-op when there is none."""
    with contextlib.suppress(KeyError):
        SYNC_READY.remove(namespace, name)


class Outcome:
    """Filled in by the code inside `observe`: the result label and, on a problem, a reason."""

    def __init__(self) -> None:
        self.result = "success"
        self.reason: str | None = None

    def problem(self, reason: str) -> None:
        self.result = "problem"
        self.reason = reason


@contextmanager
def observe(trigger: str) -> Iterator[Outcome]:
    """Count and time one reconcile; an escaping exception counts as result `error`."""
    outcome = Outcome()
    started = time.monotonic()
    try:
        yield outcome
    except BaseException:
        outcome.result = "error"
        raise
    finally:
        RECONCILE_DURATION.labels(trigger=trigger).observe(time.monotonic() - started)
        RECONCILES.labels(trigger=trigger, result=outcome.result).inc()
        if outcome.reason is not None:
            RECONCILE_ERRORS.labels(reason=outcome.reason).inc()


def serve(*, port: int) -> None:
    """Serve `/metrics` on `port` in a daemon thread; 0 disables."""
    if port:
        prom.start_http_server(port, registry=REGISTRY)
