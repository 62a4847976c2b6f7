"""The operator's metrics: one registry per `OperatorMetrics` (as the worker's), and the
names its `/metrics` endpoint serves, which the chart's alerts and dashboard read."""

from __future__ import annotations

import httpx
import pytest

from airflow_asset_sync.controller.metrics import OperatorMetrics
from rig.procs import free_port

#: What the operator exported when its registry was built at import time (issue 16 made it
#: per instance); the chart's PrometheusRule and dashboard read these.
NAMES = {
    "airflow_asset_sync_operator_reconcile_duration_seconds": "histogram",
    "airflow_asset_sync_operator_reconcile_errors": "counter",
    "airflow_asset_sync_operator_reconciles": "counter",
    "airflow_asset_sync_operator_sync_ready": "gauge",
    "process_cpu_seconds": "counter",
    "process_max_fds": "gauge",
    "process_open_fds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "python_info": "gauge",
}


def test_each_instance_counts_on_its_own() -> None:
    one, two = OperatorMetrics(), OperatorMetrics()
    with one.observe("change") as outcome:
        outcome.problem("SecretNotFound")
    labels = {"trigger": "change", "result": "problem"}
    assert one.registry.get_sample_value("airflow_asset_sync_operator_reconciles_total", labels)
    assert two.registry.get_sample_value(
        "airflow_asset_sync_operator_reconciles_total", labels
    ) in (None, 0.0)


def test_an_escaping_exception_counts_as_error() -> None:
    metrics = OperatorMetrics()
    with pytest.raises(RuntimeError), metrics.observe("resync"):
        raise RuntimeError("boom")
    value = metrics.registry.get_sample_value(
        "airflow_asset_sync_operator_reconciles_total", {"trigger": "resync", "result": "error"}
    )
    assert value == 1.0


def test_the_registry_holds_the_names_the_chart_reads() -> None:
    families = {family.name: family.type for family in OperatorMetrics().registry.collect()}
    assert families == NAMES


def test_the_endpoint_serves_them() -> None:
    metrics = OperatorMetrics()
    metrics.record_ready(namespace="ns", name="s", conditions=[{"type": "Ready", "status": "True"}])
    server = metrics.serve(port=free_port())
    assert server is not None
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    served = {
        name: kind
        for _, _, name, kind in (
            line.split() for line in text.splitlines() if line.startswith("# TYPE ")
        )
    }
    assert served == {
        name + ("_total" if kind == "counter" else ""): kind for name, kind in NAMES.items()
    }
    assert 'airflow_asset_sync_operator_sync_ready{sync="s",sync_namespace="ns"} 1.0' in text


def test_port_zero_serves_nothing() -> None:
    assert OperatorMetrics().serve(port=0) is None
