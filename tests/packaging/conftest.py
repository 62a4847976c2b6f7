"""Fixtures of the packaging checks that need the rig's kube-apiserver."""

from __future__ import annotations

import pytest

from rig.kube import KubeRig
from support import packaging_tools as tools
from support.packaging_tools import CHART


def _established(kube: KubeRig, *names: str) -> None:
    kube.kubectl(
        "wait",
        "--for=condition=Established",
        *(f"crd/{name}" for name in names),
        "--timeout=60s",
    )


@pytest.fixture(scope="session")
def chart_crds(kube: KubeRig) -> KubeRig:
    """The chart's CRDs, applied with the command the README gives for upgrades."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    _established(
        kube,
        "airflowassetsyncs.airflow-asset-sync.github.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    )
    return kube


@pytest.fixture(scope="session")
def monitoring_crds(chart_crds: KubeRig) -> KubeRig:
    """prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs."""
    for path in tools.monitoring_crds():
        chart_crds.kubectl("apply", "--server-side", "-f", str(path))
    _established(
        chart_crds,
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    )
    return chart_crds
