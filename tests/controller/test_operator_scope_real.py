"""A namespace-scoped operator (`--namespace a`) serves namespace a only.

Its identity holds the operator's rules through a RoleBinding in namespace a and nothing
cluster-wide: this is also the check that a namespace-scoped install needs no ClusterRole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.resources import naming
from rig.kube import KubeRig
from support import live
from support.live import condition, get, wait_for

pytestmark = pytest.mark.rig

SERVED = "scope-a"
IGNORED = "scope-b"
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)


@pytest.fixture(scope="module")
def scoped_operator(operator_rbac: KubeRig) -> Iterator[live.OperatorProcess]:
    for ns in (SERVED, IGNORED):
        live.create_namespace(operator_rbac, ns)
    kubeconfig = live.operator_identity(operator_rbac, name="operator-scoped", namespaces=[SERVED])
    proc = live.OperatorProcess(
        operator_rbac,
        name="scoped",
        kubeconfig=kubeconfig,
        args=("--namespace", SERVED, "--standalone"),
    )
    proc.start()
    try:
        yield proc
    finally:
        if proc.running:
            operator_rbac.kubectl(
                "delete", "aas", "--all", "-n", SERVED, "--timeout=60s", check=False
            )
        proc.stop()
        # Never served: no finalizer, so it goes at once.
        operator_rbac.kubectl("delete", "aas", "--all", "-n", IGNORED, "--timeout=60s", check=False)


def _served(kube: KubeRig, ns: str, name: str) -> bool:
    """The operator reconciled it: status written and the worker Deployment created."""
    sync = get(kube, api.PLURAL, name, ns)
    return (
        sync is not None
        and condition(sync, "Ready") is not None
        and get(kube, "deployment", naming.worker_name(name), ns) is not None
    )


def test_namespace_scoped_operator_ignores_other_namespaces(
    kube: KubeRig, scoped_operator: live.OperatorProcess
) -> None:
    live.apply(kube, live.sync_manifest("first"), namespace=SERVED)
    wait_for(lambda: _served(kube, SERVED, "first"), what="the served namespace reconciled")

    # Created in b before a second sync in a: by the time the second is served, the first
    # would have been seen too if b were watched. No sleep needed to show it was not.
    live.apply(kube, live.sync_manifest("elsewhere"), namespace=IGNORED)
    live.apply(kube, live.sync_manifest("second"), namespace=SERVED)
    wait_for(lambda: _served(kube, SERVED, "second"), what="the second sync reconciled")

    ignored = get(kube, api.PLURAL, "elsewhere", IGNORED)
    assert ignored is not None
    assert "status" not in ignored
    assert not ignored["metadata"].get("finalizers")
    assert get(kube, "deployment", naming.worker_name("elsewhere"), IGNORED) is None
    assert get(kube, "serviceaccount", naming.worker_name("elsewhere"), IGNORED) is None
    assert f"{IGNORED}/elsewhere" not in scoped_operator.log()
    # And it got by without any cluster-wide permission.
    # The log's timestamps carry milliseconds (",403 INFO" once failed this in CI), so look
    # at each message without its timestamp.
    messages = _TIMESTAMP.sub("", scoped_operator.log())
    assert "forbidden" not in messages.lower()
    assert not re.search(r"\b403\b", messages)
