"""The chart's Grafana dashboard, and a real stack for its queries to read.

- `load`, `panel_queries`, `variable_queries`, `substitute`: the dashboard JSON as data, each
  panel target's PromQL with the template variables filled in as Grafana would for one sync;
- `DashboardStack`: a real worker (`airflow-asset-sync run -f`, through Kafka, its source and
  target behind fault proxies) and the real operator (against the rig's kube-apiserver,
  reconciling an AirflowAssetSync of the same name), both scraped every second by a real
  Prometheus with the labels the chart's PodMonitor and ServiceMonitor attach. Tests and the
  README's picture (`python -m bench.dashboard`) drive it through the same steps: events
  flowing, a parked asset, a target outage, a source outage.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from airflow_asset_sync.api import spec as api
from rig.airflow import AirflowInstance
from rig.faultproxy import FaultProxy
from rig.kube import KubeRig
from rig.procs import free_port
from rig.prometheus import PrometheusServer, ScrapeTarget, Series
from rig.sync import SyncProcess, sync_manifests
from support import live
from support.packaging_tools import CHART

__all__ = ["DashboardStack", "PanelQuery", "Series"]

DASHBOARD = CHART / "dashboards" / "airflow-asset-sync.json"
#: What the chart's ServiceMonitor makes the operator's job and namespace (release "aas").
OPERATOR_JOB = "aas-airflow-asset-sync-metrics"
OPERATOR_NAMESPACE = "aas-system"
#: The worker job a PodMonitor makes: `<namespace>/<podmonitor name>`.
WORKER_JOB = "aas-system/aas-airflow-asset-sync-workers"
READY = "airflow_asset_sync_operator_sync_ready"
#: `$__rate_interval` for a 1 s scrape: Grafana's 4 x scrape interval, with a margin.
RATE_INTERVAL = "5s"


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    title: str
    ref_id: str
    expr: str
    legend: str


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(
            panel_id=int(panel["id"]),
            title=str(panel["title"]),
            ref_id=str(target["refId"]),
            expr=str(target["expr"]),
            legend=str(target.get("legendFormat", "")),
        )
        for panel in panels(dashboard)
        for target in panel.get("targets") or ()
    ]


_LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def variable_queries(dashboard: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Query variables: name -> (series selector, label) of their `label_values(...)`."""
    out: dict[str, tuple[str, str]] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        found = _LABEL_VALUES.match(query.strip())
        assert found, f"variable {var['name']}: not a label_values() query: {query}"
        out[var["name"]] = (found["match"], found["label"])
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Fill in `$name` / `${name}` as Grafana does; an unknown variable is an error."""

    def one(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        assert name in values, f"unknown template variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(?P<braced>\w+)\}|\$(?P<bare>\w+)", one, expr)


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


# --- the stack -----------------------------------------------------------------------------


def _port(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None, url
    return port


class DashboardStack:
    """Worker + operator + Prometheus, as the dashboard sees them in a cluster."""

    def __init__(
        self,
        workdir: Path,
        *,
        source: AirflowInstance,
        target: AirflowInstance,
        kafka_bootstrap: str,
        kube: KubeRig,
        assets: Sequence[str],
        name: str = "dash",
        namespace: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.source, self.target, self.kube = source, target, kube
        self.assets = list(assets)
        self.name = name
        self.namespace = namespace or f"dash-{secrets.token_hex(3)}"
        self.parked_uri = f"s3://aas-test/dash-parked/{secrets.token_hex(4)}"
        self.source_proxy = FaultProxy(_port(source.url), fault_rate=0.0, weights={"503": 1})
        self.target_proxy = FaultProxy(_port(target.url), fault_rate=0.0, weights={"503": 1})
        self._kafka = kafka_bootstrap
        self.worker: SyncProcess | None = None
        self.operator: live.OperatorProcess | None = None
        self.prometheus: PrometheusServer | None = None
        self.started_at = 0.0
        self._client: httpx.Client | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> DashboardStack:
        self.started_at = time.time()
        self.source_proxy.start()
        self.target_proxy.start()
        self.source.add_assets([self.parked_uri])  # the source knows it, the target never will
        docs = sync_manifests(
            self.name,
            self.source,
            [("t", self.target)],
            include=[*self.assets, self.parked_uri],
            kafka=self._kafka,
            topic=f"dash-{secrets.token_hex(4)}",
            target_options={"t": {"onUnknownAsset": "retry"}},
        )
        sync = docs[-1]
        sync["metadata"]["namespace"] = self.namespace
        sync["spec"]["source"]["url"] = self.source_proxy.url
        sync["spec"]["targets"][0]["url"] = self.target_proxy.url
        self.worker = SyncProcess(self.workdir / "worker", docs).start()

        self._start_operator()
        self.prometheus = PrometheusServer(
            self.workdir / "prometheus",
            [
                ScrapeTarget(
                    job=WORKER_JOB,
                    port=self.worker.metrics_port,
                    labels={"namespace": self.namespace, "sync": self.name},
                ),
                ScrapeTarget(
                    job=OPERATOR_JOB,
                    port=self.operator_port,
                    labels={"namespace": OPERATOR_NAMESPACE},
                ),
            ],
        ).start()
        self.prometheus.wait_scraped()
        return self

    def _start_operator(self) -> None:
        kube = self.kube
        kube.kubectl("apply", "-f", str(live.SYNC_CRD))
        live.wait_established(kube, "airflowassetsyncs.airflow-asset-sync.github.io")
        live.install_operator_rbac(kube)
        live.create_namespace(kube, self.namespace)
        # Served namespace only: the syncs other tests leave behind are not this one's business.
        kubeconfig = live.operator_identity(
            kube, name=f"aas-{self.namespace}", namespaces=[self.namespace]
        )
        self.operator_port = free_port()
        self.operator = live.OperatorProcess(
            kube,
            name=self.namespace,
            kubeconfig=kubeconfig,
            args=("--namespace", self.namespace, "--standalone"),
            metrics_port=self.operator_port,
        )
        self.operator.start()
        live.apply(kube, live.sync_manifest(self.name), namespace=self.namespace)
        worker = f"{self.name}-worker"

        def ready(status: str) -> bool:
            sync = live.get(kube, api.PLURAL, self.name, self.namespace)
            found = live.condition(sync, "Ready")
            assert found is not None and found["status"] == status, found
            return True

        # Reconciled (status written, the worker rolling out): Ready is Unknown, the series 0.
        live.wait_for(lambda: ready("Unknown"), what="the operator to reconcile the sync")
        live.wait_for(
            lambda: self.operator_metric(READY) == 0.0, what="the operator's Ready series at 0"
        )
        # The bare API server runs no controllers: report the rollout done, as they would.
        live.act_as_deployment_controller(kube, self.namespace, worker, ready=True)
        live.wait_for(lambda: ready("True"), what="the sync to turn Ready")
        live.wait_for(
            lambda: self.operator_metric(READY) == 1.0, what="the operator's Ready series at 1"
        )

    def stop(self) -> None:
        for stop in (
            self.prometheus.stop if self.prometheus else None,
            self.worker.stop if self.worker else None,
            self.operator.stop if self.operator else None,
            self._client.close if self._client else None,
            self.source_proxy.stop,
            self.target_proxy.stop,
        ):
            if stop is not None:
                stop()
        if self.operator is not None:
            self.kube.kubectl(
                "delete", api.PLURAL, self.name, "-n", self.namespace, "--wait=false", check=False
            )

    def __enter__(self) -> DashboardStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- readings -----------------------------------------------------------------------------

    def operator_metric(self, name: str) -> float | None:
        """The operator's sample of `name` for this sync (None when it has none)."""
        text = httpx.get(f"http://127.0.0.1:{self.operator_port}/metrics", timeout=5).text
        wanted = {"sync_namespace": self.namespace, "sync": self.name}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == wanted:
                    return float(sample.value)
        return None

    def metric(self, name: str, **labels: str) -> float:
        assert self.worker is not None
        return self.worker.metric(name, **labels)

    # -- traffic and faults -------------------------------------------------------------------

    def emit(self, count: int, uris: Sequence[str] | None = None) -> None:
        """`count` source events, round robin over `uris` (default: the stack's assets)."""
        if self._client is None:
            self._client = self.source.client()
        chosen = list(uris or self.assets)
        for i in range(count):
            self.source.create_event(chosen[i % len(chosen)], {"n": i}, self._client)

    def wait_replayed(self, total: float, timeout_s: float = 120) -> None:
        live.wait_for(
            lambda: self.metric("aas_events_replayed_total", target="t") >= total,
            what=f"{total:.0f} events replayed",
            timeout_s=timeout_s,
        )

    def park(self, count: int = 2) -> None:
        """Events on an asset the target does not have: parked, and stay parked."""
        self.emit(count, [self.parked_uri])
        live.wait_for(
            lambda: self.metric("aas_parked_events", target="t") >= count,
            what="events parked",
            timeout_s=120,
        )

    def target_outage(self, events: int) -> None:
        """The target answers 503 while `events` wait (lag grows, replay errors); then heals."""
        before = self.metric("aas_events_replayed_total", target="t")
        errors = self.metric("aas_replay_errors_total", target="t")
        self.target_proxy.fault_rate = 1.0
        try:
            self.emit(events)
            live.wait_for(
                lambda: (
                    self.metric("aas_replay_errors_total", target="t") >= errors + 3
                    and self.metric("aas_asset_lag_seconds", target="t") > 0
                ),
                what="replay errors and per-asset lag during the target outage",
                timeout_s=120,
            )
        finally:
            self.target_proxy.fault_rate = 0.0
        self.wait_replayed(before + events)

    def source_outage(self) -> None:
        """The source answers 503 until the worker has counted a few failed polls."""
        errors = self.metric("aas_poll_errors_total")
        self.source_proxy.fault_rate = 1.0
        try:
            live.wait_for(
                lambda: self.metric("aas_poll_errors_total") >= errors + 2,
                what="poll errors during the source outage",
                timeout_s=120,
            )
        finally:
            self.source_proxy.fault_rate = 0.0
        polled = self.metric("aas_last_successful_poll_timestamp_seconds")
        live.wait_for(
            lambda: self.metric("aas_last_successful_poll_timestamp_seconds") > polled,
            what="a good poll after the source outage",
            timeout_s=120,
        )

    def wait_in_prometheus(self, since: float, timeout_s: float = 30) -> None:
        """Until Prometheus holds scrapes of both targets taken after `since` (unix time)."""
        assert self.prometheus is not None
        prometheus = self.prometheus

        def fresh() -> bool:
            now = time.time()
            for job in (WORKER_JOB, OPERATOR_JOB):
                got = prometheus.query_range(f'timestamp(up{{job="{job}"}})', since, now)
                if not got or max(got[0].finite, default=0.0) <= since:
                    return False
            return True

        live.wait_for(fresh, what="Prometheus to scrape after the last step", timeout_s=timeout_s)

    def variables(self) -> dict[str, str]:
        """Template variables as Grafana sets them with this sync selected."""
        return {"namespace": self.namespace, "sync": self.name, "__rate_interval": RATE_INTERVAL}
