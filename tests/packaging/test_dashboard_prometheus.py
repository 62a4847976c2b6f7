"""Every panel of the chart's Grafana dashboard shows data from a real Prometheus.

Prometheus (Debian's `prometheus` package) scrapes a real worker (`run -f`, Airflow 3.3 to
Airflow 3.3 through Kafka) and the real operator (reconciling an AirflowAssetSync of the same
name on the rig's kube-apiserver) every second, labelled as the chart's PodMonitor and
ServiceMonitor label them. While it does, events flow, two are parked on an asset the target
does not have, the target answers 503 for a while (lag, per-asset lag, replay errors) and so
does the source (poll errors). Then each panel query of the dashboard JSON, with the template
variables set to this sync, is run as Grafana runs it (a range query over the run): each must
return a series with a value, and each template variable must list this sync.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.kafka import KafkaBroker
from rig.kube import KubeRig
from support import dashboard
from support.dashboard import DashboardStack

pytestmark = [pytest.mark.rig, pytest.mark.slow]


def test_every_panel_query_returns_data(
    tmp_path: Path,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    kafka: KafkaBroker,
    kube: KubeRig,
    assets: AssetPool,
) -> None:
    data = dashboard.load()
    queries = dashboard.panel_queries(data)
    assert {q.panel_id for q in queries} == {int(p["id"]) for p in dashboard.panels(data)}
    with DashboardStack(
        tmp_path,
        source=airflow3,
        target=airflow3b,
        kafka_bootstrap=kafka.bootstrap,
        kube=kube,
        assets=assets.take(4),
    ) as stack:
        stack.emit(12)
        stack.wait_replayed(12)
        stack.park(2)
        stack.target_outage(8)
        stack.source_outage()
        stack.wait_in_prometheus(time.time())
        prometheus = stack.prometheus
        assert prometheus is not None
        start, end = stack.started_at, time.time()
        variables = stack.variables()

        empty = []
        for query in queries:
            expr = dashboard.substitute(query.expr, variables)
            series = prometheus.query_range(expr, start, end)
            if not any(s.finite for s in series):
                empty.append(f"panel {query.panel_id} {query.title!r} {query.ref_id}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)

        # The template variables offer this sync.
        listed = {
            name: prometheus.label_values(label, dashboard.substitute(match, variables), start, end)
            for name, (match, label) in dashboard.variable_queries(data).items()
        }
        assert stack.namespace in listed["namespace"], listed
        assert stack.name in listed["sync"], listed

        # And the figures are the run's, not any series: Ready said 1, the parked asset and
        # the outage's per-asset lag show, the errors are the injected 503s.
        def values(panel: int, ref: str = "A") -> list[dashboard.Series]:
            (query,) = [q for q in queries if (q.panel_id, q.ref_id) == (panel, ref)]
            return prometheus.query_range(dashboard.substitute(query.expr, variables), start, end)

        (ready,) = values(1)
        assert ready.finite[-1] == 1.0
        assert max(max(s.finite) for s in values(9)) >= 2
        assets_lagging = {s.labels["asset"] for s in values(5)}
        assert assets_lagging <= set(stack.assets) | {stack.parked_uri}
        assert assets_lagging
        assert {s.labels["kind"] for s in values(8, "A")} == {"Unavailable"}
        assert {s.labels["kind"] for s in values(8, "B")} >= {"Unavailable"}
        assert max(max(s.finite) for s in values(2)) > 0
        assert max(max(s.finite) for s in values(3)) > 0
    # Stopped with the stack, also on failure (the context manager).
    assert stack.prometheus is not None and not stack.prometheus.server.running
