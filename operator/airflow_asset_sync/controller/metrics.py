"""Prometheus metrics of the operator: reconciles, their outcome and duration.

Each `OperatorMetrics` owns a registry, as each `worker.metrics.WorkerMetrics` does, rather
than using prometheus-client's global one or one built at import time: the worker has
metrics too, and a process that imports both (the local `run` mode, tests) must not collide
on names or export the other's series; and a test (or an embedder) that builds its own
`handlers.Runtime` starts from zero instead of reading what earlier tests counted. Process
metrics are added explicitly.

Label values are small fixed sets (trigger, result, reason), never object names, with one
exception: `sync_ready`, one series per AirflowAssetSync this operator serves. That is the
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
from wsgiref.simple_server import WSGIServer

import prometheus_client as prom


def ready_value(conditions: Iterable[Mapping[str, Any]] | None) -> float:
    """1.0 when the conditions hold ``Ready=True``, else 0.0 (no Ready condition included)."""
    for condition in conditions or ():
        if condition.get("type") == "Ready":
            return 1.0 if condition.get("status") == "True" else 0.0
    return 0.0


class Outcome:
    """Filled in by the code inside `OperatorMetrics.observe`: the result label and, on a
    problem, a reason."""

    def __init__(self) -> None:
        self.result = "success"
        self.reason: str | None = None

    def problem(self, reason: str) -> None:
        self.result = "problem"
        self.reason = reason


class OperatorMetrics:
    """Every metric the operator exports, registered in its own registry."""

    def __init__(self, *, registry: prom.CollectorRegistry | None = None) -> None:
        self.registry = (
            registry if registry is not None else prom.CollectorRegistry(auto_describe=True)
        )
        r = self.registry
        prom.ProcessCollector(registry=r)
        prom.PlatformCollector(registry=r)
        self.reconciles = prom.Counter(
            "airflow_asset_sync_operator_reconciles",
            "Reconciles of AirflowAssetSync objects, by trigger and result.",
            ["trigger", "result"],
            registry=r,
        )
        self.reconcile_errors = prom.Counter(
            "airflow_asset_sync_operator_reconcile_errors",
            "Reconciles that found a problem, by condition reason (e.g. SecretNotFound).",
            ["reason"],
            registry=r,
        )
        self.reconcile_duration = prom.Histogram(
            "airflow_asset_sync_operator_reconcile_duration_seconds",
            "Wall time of one reconcile, API calls included.",
            ["trigger"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        #: Labelled `sync_namespace` and `sync`, not `namespace`: a scrape (the chart's
        #: ServiceMonitor) attaches the operator's own namespace as `namespace`, which would
        #: rename ours to `exported_namespace`. `sync` is the object's name, as
        #: kube-state-metrics' config names it.
        self.sync_ready = prom.Gauge(
            "airflow_asset_sync_operator_sync_ready",
            "1 while the AirflowAssetSync's Ready condition is True, else 0 (False or Unknown).",
            ["sync_namespace", "sync"],
            registry=r,
        )

    def record_ready(
        self, *, namespace: str, name: str, conditions: Iterable[Mapping[str, Any]] | None
    ) -> None:
        """Set the sync's Ready series from the conditions the operator just computed."""
        self.sync_ready.labels(sync_namespace=namespace, sync=name).set(ready_value(conditions))

    def forget_sync(self, *, namespace: str, name: str) -> None:
        """Remove the sync's Ready series (the sync is deleted); a no-op when there is none."""
        with contextlib.suppress(KeyError):
            self.sync_ready.remove(namespace, name)

    @contextmanager
    def observe(self, trigger: str) -> Iterator[Outcome]:
        """Count and time one reconcile; an escaping exception counts as result `error`."""
        outcome = Outcome()
        started = time.monotonic()
        try:
            yield outcome
        except BaseException:
            outcome.result = "error"
            raise
        finally:
            self.reconcile_duration.labels(trigger=trigger).observe(time.monotonic() - started)
            self.reconciles.labels(trigger=trigger, result=outcome.result).inc()
            if outcome.reason is not None:
                self.reconcile_errors.labels(reason=outcome.reason).inc()

    def serve(self, *, port: int) -> WSGIServer | None:
        """Serve `/metrics` on `port` in a daemon thread; 0 disables (None).

        The server is returned so that a test can stop it; the operator serves until its
        process ends.
        """
        if not port:
            return None
        server, _ = prom.start_http_server(port, registry=self.registry)
        return server
