"""Fixtures for the operator's tests against the rig's real kube-apiserver."""

from __future__ import annotations

import pytest

from rig.kube import KubeRig
from support import live


@pytest.fixture(scope="session")
def sync_crd(kube: KubeRig) -> KubeRig:
    """The AirflowAssetSync CRD installed the way a user does (`kubectl apply -f`), established."""
    kube.kubectl("apply", "-f", str(live.SYNC_CRD))
    live.wait_established(kube, "airflowassetsyncs.airflow-asset-sync.github.io")
    return kube


@pytest.fixture(scope="session")
def operator_rbac(sync_crd: KubeRig) -> KubeRig:
    """The operator's ClusterRole (`rbac.operator_rules()`), for identities bound to it."""
    live.install_operator_rbac(sync_crd)
    return sync_crd
