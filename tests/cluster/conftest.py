"""The chart, installed with `helm install` into the real cluster, from the image the
project's Dockerfile builds, in a namespace that enforces the `restricted` Pod Security level."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rig.cluster import ClusterRig
from support import pods
from support.pods import OPERATOR_NS, OPERATOR_SELECTOR
from support.release import Release

#: Namespaces that outlive a test: the cluster's own and the operator's release.
KEPT_NAMESPACES = frozenset(
    {"default", "kube-system", "kube-public", "kube-node-lease", OPERATOR_NS}
)


@pytest.fixture(autouse=True)
def delete_test_namespaces(cluster: ClusterRig) -> Iterator[None]:
    """Delete the namespaces a test made once it ends, so its worker pods stop polling the
    shared Airflow instances (and using the CPU) while later tests run."""
    before = set(pods.namespaces(cluster))
    yield
    for name in sorted(set(pods.namespaces(cluster)) - before - KEPT_NAMESPACES):
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator_release(cluster: ClusterRig) -> Release:
    """The chart installed as the README says (`pods.install_operator`)."""
    pods.install_operator(cluster)
    release = Release(kube=cluster, name="aas", namespace=OPERATOR_NS)
    pods.one_ready_pod(cluster, OPERATOR_NS, OPERATOR_SELECTOR)
    return release
