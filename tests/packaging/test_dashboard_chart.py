"""The Grafana dashboard the chart ships: its ConfigMap, and the JSON itself.

The ConfigMap is rendered only when `grafanaDashboard.enabled`, carries the sidecar's label,
and embeds the file byte for byte. The JSON has stable, unique panel ids, and every panel's
query parses as PromQL (promql-parser, as for the alerts) and reads only metrics the worker
or the operator exports. `test_dashboard_prometheus.py` runs the queries for real.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from airflow_asset_sync.controller.metrics import OperatorMetrics
from airflow_asset_sync.worker.metrics import WorkerMetrics
from support import chart, dashboard
from support import packaging_tools as tools
from support.chart import find, render, select

KEY = "airflow-asset-sync.json"
#: Panel ids are how Grafana links to a panel (`viewPanel=`): they never change.
PANELS = {
    1: "Ready per sync",
    2: "Events in (published /s)",
    3: "Events out (replayed /s)",
    4: "Lag per target",
    5: "Lag per asset (top 10 per target)",
    6: "Source poll latency",
    7: "Target write latency",
    8: "Errors by kind",
    9: "Parked events (unknown assets)",
    10: "Oldest parked event",
}

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


def _metric_names(exprs: list[str]) -> dict[str, dict[str, Any]]:
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


def _exported() -> set[str]:
    names: set[str] = set()
    for registry in (OperatorMetrics().registry, WorkerMetrics().registry):
        for family in registry.collect():
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
            }.get(family.type, ("",))
            names.update(family.name + s for s in suffixes)
    return names


def test_the_configmap_is_rendered_only_when_enabled() -> None:
    assert not [o for o in select(render(), "ConfigMap") if KEY in (o.get("data") or {})]
    objs = render(sets={"grafanaDashboard.enabled": "true"})
    cm = find(objs, "ConfigMap", name="aas-airflow-asset-sync-dashboard")
    assert cm["metadata"]["namespace"] == "aas-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in cm["metadata"]
    text = cm["data"][KEY]
    assert text == dashboard.DASHBOARD.read_text()
    assert json.loads(text) == dashboard.load()


def test_label_namespace_and_annotations_are_settable() -> None:
    objs = render(
        sets={
            "grafanaDashboard.enabled": "true",
            "grafanaDashboard.namespace": "monitoring",
            "grafanaDashboard.sidecarLabel": "example.com/dashboard",
            "grafanaDashboard.sidecarLabelValue": "yes",
            "grafanaDashboard.labels.team": "data",
            "grafanaDashboard.annotations.grafana_folder": "Airflow",
        }
    )
    meta = find(objs, "ConfigMap", name="aas-airflow-asset-sync-dashboard")["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["example.com/dashboard"] == "yes"
    assert "grafana_dashboard" not in meta["labels"]
    assert meta["labels"]["team"] == "data"
    assert meta["annotations"] == {"grafana_folder": "Airflow"}


def test_schema_rejects_a_misspelt_dashboard_key() -> None:
    result = chart.helm(
        "template",
        "t",
        str(tools.CHART),
        "--kube-version",
        chart.KUBE_VERSION,
        "--set",
        "grafanaDashboard.enable=true",
        check=False,
    )
    assert result.returncode != 0
    assert "at '/grafanaDashboard': additional properties 'enable'" in result.stderr


def test_the_monitoring_ci_values_ship_the_dashboard() -> None:
    values = yaml.safe_load((tools.CHART / "ci" / "monitoring-values.yaml").read_text())
    assert values["grafanaDashboard"]["enabled"] is True


def test_panels_have_stable_ids_and_a_query_each() -> None:
    data = dashboard.load()
    assert data["uid"] == "airflow-asset-sync"
    found = {int(p["id"]): p["title"] for p in dashboard.panels(data)}
    assert found == PANELS
    for panel in dashboard.panels(data):
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    names = [v["name"] for v in data["templating"]["list"]]
    assert names == ["datasource", "namespace", "sync"]


def test_every_query_parses_and_reads_exported_metrics() -> None:
    data = dashboard.load()
    variables = {"namespace": "data", "sync": "orders", "__rate_interval": "1m"}
    exprs = {
        f"{q.panel_id}{q.ref_id}": dashboard.substitute(q.expr, variables)
        for q in dashboard.panel_queries(data)
    }
    for match, _ in dashboard.variable_queries(data).values():
        exprs[f"variable {match}"] = dashboard.substitute(match, variables)
    parsed = _metric_names(list(exprs.values()))
    known = _exported()
    for where, expr in exprs.items():
        result = parsed[expr]
        assert "error" not in result, f"{where}: {result.get('error')}"
        assert result["metrics"], where
        unknown = set(result["metrics"]) - known
        assert not unknown, f"{where} reads metrics nobody exports: {sorted(unknown)}"


def test_substitute_fails_on_an_unknown_variable() -> None:
    assert dashboard.substitute('x{a=~"$a"}[${b}]', {"a": "1", "b": "5s"}) == 'x{a=~"1"}[5s]'
    with pytest.raises(AssertionError, match=r"\$nope"):
        dashboard.substitute("x[$nope]", {})
