"""Prometheus metrics of the operator: reconciles, their outcome and duration.

A registry of its own rather than prometheus-client's global one: the worker has metrics too,
and a process that imports both (the local `run` mode, tests) must not collide on names or
export the other's series. Process metrics are added explicitly.

Label values are small fixed sets (trigger, result, reason), never object names: a label per
AirflowAssetSync would grow without bound in a large cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

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
