"""The chart's monitoring objects: alert expressions parse as PromQL and read only metrics that
exist (the operator's and the worker's registries, kube-state-metrics' config in
deploy/monitoring/), and the scrape objects select what the operator really creates.

PromQL is parsed by promql-parser (a PromQL parser; see support.packaging_tools), run in the
packaging linters' virtualenv.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.controller.metrics import OperatorMetrics
from airflow_asset_sync.resources import naming
from airflow_asset_sync.worker.metrics import WorkerMetrics
from rig.cache import ROOT
from support import packaging_tools as tools
from support.chart import find, render, select
from support.packaging_tools import CHART

MONITORING = CHART / "ci" / "monitoring-values.yaml"
KSM_CONFIG = ROOT / "deploy" / "monitoring" / "kube-state-metrics-airflowassetsync.yaml"
#: Series Prometheus makes itself.
PROMETHEUS_SERIES = {"up"}

_PROMQL = r"""
import json, sys
import promql_parser as p

out = {}
for expr in json.load(sys.stdin):
    try:
        ast = p.parse(expr)
    except ValueError as exc:
        out[expr] = {"error": str(exc)}
        continue
    names = set()
    def visit(node):
        if isinstance(node, p.VectorSelector) and node.name:
            names.add(node.name)
    p.walk(ast, pre_visit=visit)
    out[expr] = {"metrics": sorted(names)}
json.dump(out, sys.stdout)
"""


def parse_promql(exprs: list[str]) -> dict[str, dict[str, Any]]:
    result = subprocess.run(
        [str(tools.linters_python()), "-c", _PROMQL],
        input=json.dumps(exprs),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    parsed: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return parsed


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Sample names a registry exports, labelled children or not."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def ksm_names() -> set[str]:
    config = yaml.safe_load(KSM_CONFIG.read_text())
    (resource,) = config["spec"]["resources"]
    assert resource["groupVersionKind"] == {
        "group": api.GROUP,
        "version": api.VERSION,
        "kind": api.KIND,
    }
    return {f"{resource['metricNamePrefix']}_{m['name']}" for m in resource["metrics"]}


def alert_rules() -> list[dict[str, Any]]:
    rule = find(render(values=[MONITORING]), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def test_the_documented_alerts_are_there() -> None:
    alerts = {r["alert"]: r for r in alert_rules()}
    assert set(alerts) == {
        "AirflowAssetSyncNotReady",
        "AirflowAssetSyncLagHigh",
        "AirflowAssetSyncPollStale",
        "AirflowAssetSyncNeverPolled",
        "AirflowAssetSyncReplayErrors",
        "AirflowAssetSyncReconcileProblems",
        "AirflowAssetSyncOperatorDown",
    }
    assert alerts["AirflowAssetSyncNotReady"]["for"] == "10m"
    # monitoring-values.yaml sets the lag threshold to 120 s.
    assert alerts["AirflowAssetSyncLagHigh"]["expr"].endswith("> 120")
    assert alerts["AirflowAssetSyncPollStale"]["expr"].endswith("> 300")
    assert alerts["AirflowAssetSyncNeverPolled"]["for"] == "5m"
    # Prometheus templates survive Helm's templating untouched.
    assert "{{ $labels.sync }}" in alerts["AirflowAssetSyncNotReady"]["annotations"]["summary"]


def test_alerts_parse_and_read_only_metrics_that_exist() -> None:
    known = (
        exported_names(OperatorMetrics().registry)
        | exported_names(WorkerMetrics().registry)
        | ksm_names()
        | PROMETHEUS_SERIES
    )
    rules = alert_rules()
    parsed = parse_promql([r["expr"] for r in rules])
    for rule in rules:
        result = parsed[rule["expr"]]
        assert "error" not in result, f"{rule['alert']}: {result.get('error')}"
        assert result["metrics"], rule["alert"]
        unknown = set(result["metrics"]) - known
        assert not unknown, f"{rule['alert']} reads metrics nobody exports: {sorted(unknown)}"


def test_parser_rejects_bad_promql() -> None:
    """The check above can fail: a broken expression is reported, not waved through."""
    parsed = parse_promql(["max by (sync (aas_lag_seconds)"])
    assert "error" in parsed["max by (sync (aas_lag_seconds)"]


def test_alerts_can_be_switched_off_one_by_one() -> None:
    objs = render(
        values=[MONITORING],
        sets={
            "metrics.prometheusRule.notReady.enabled": "false",
            "metrics.prometheusRule.poll.enabled": "false",
            "metrics.serviceMonitor.enabled": "false",
        },
    )
    alerts = {r["alert"] for r in find(objs, "PrometheusRule")["spec"]["groups"][0]["rules"]}
    assert alerts == {
        "AirflowAssetSyncLagHigh",
        "AirflowAssetSyncReplayErrors",
        "AirflowAssetSyncReconcileProblems",
    }


def test_pod_monitor_selects_the_workers_the_operator_creates() -> None:
    objs = render(values=[MONITORING])
    monitor = find(objs, "PodMonitor")["spec"]
    worker_labels = naming.labels("orders-to-v3")
    assert monitor["selector"]["matchLabels"].items() <= worker_labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] == naming.METRICS_PORT_NAME
    assert endpoint["path"] == naming.METRICS_PATH
    assert monitor["namespaceSelector"] == {"any": True}
    relabel = endpoint["relabelings"][0]
    label = naming.LABEL_INSTANCE.replace(".", "_").replace("/", "_")
    assert relabel == {
        "sourceLabels": [f"__meta_kubernetes_pod_label_{label}"],
        "targetLabel": "sync",
    }

    namespaced = render(
        values=[MONITORING, CHART / "ci" / "namespaced-values.yaml"],
    )
    assert find(namespaced, "PodMonitor")["spec"]["namespaceSelector"] == {
        "matchNames": ["team-a", "team-b"]
    }


def test_service_monitor_scrapes_the_operator_service() -> None:
    objs = render(values=[MONITORING])
    monitor = find(objs, "ServiceMonitor")
    service = find(objs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert not select(render(), "ServiceMonitor")
