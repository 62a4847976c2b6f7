"""Two operator processes with one peering name: one acts, the other stands by.

kopf's peering: each process writes keep-alives (identity, priority) into the status of a
ClusterKopfPeering and pauses while a live peer has a higher priority. The CRDs are the ones
in crds/kopf-peering.yaml; the peering object is what the chart creates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from airflow_asset_sync.controller.peering import PeeringGate
from airflow_asset_sync.resources import naming
from rig.kube import KubeRig
from support import live
from support.live import get, wait_for

pytestmark = pytest.mark.rig

PEERING = "aas-ha-test"
NS = "ha"
PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"


@pytest.fixture(scope="module")
def peering(operator_rbac: KubeRig) -> KubeRig:
    kube = operator_rbac
    kube.kubectl("apply", "-f", str(live.PEERING_CRDS))
    for crd in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        live.wait_established(kube, crd)
    live.apply(
        kube,
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}},
    )
    live.create_namespace(kube, NS)
    return kube


@pytest.fixture(scope="module")
def pair(peering: KubeRig) -> Iterator[list[live.OperatorProcess]]:
    kubeconfig = live.operator_identity(peering, name="operator-ha")
    # Explicit priorities make the election deterministic: the second, started later, has
    # the higher one, so the first must step back (kopf's takeover path, not just "the second
    # waits"). Without --priority each process draws a random one.
    procs = [
        live.OperatorProcess(
            peering,
            name=f"ha-{priority}",
            kubeconfig=kubeconfig,
            args=("--peering", PEERING, "--priority", str(priority)),
        )
        for priority in (100, 200)
    ]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        active = [p for p in procs if p.running]
        if active:
            peering.kubectl("delete", "aas", "--all", "-n", NS, "--timeout=60s", check=False)
        for proc in procs:
            proc.stop()


def _handled(proc: live.OperatorProcess, name: str) -> int:
    return proc.count(rf"Handler 'reconcile' succeeded\. object={NS}/{re.escape(name)}\b")


def test_only_one_of_two_peers_acts_and_the_other_takes_over(
    peering: KubeRig, pair: list[live.OperatorProcess]
) -> None:
    kube = peering
    low, high = pair
    # The first ran alone, then stepped back when the higher-priority peer appeared.
    low.wait_log(PAUSED, timeout_s=60)
    assert high.count(RESUMED) >= 1
    assert PAUSED not in high.log()
    peers = live.get_any(kube, "clusterkopfpeering", PEERING).get("status") or {}
    assert sorted(p["priority"] for p in peers.values()) == [100, 200]
    # The resync thread (not a kopf handler, so not paused by kopf) stands by on the same
    # rule, read from the same object through the operator's own client.
    client = live.kube_client_for(kube.kubeconfig)

    def gate(priority: int) -> PeeringGate:
        return PeeringGate(
            read=lambda ns: client.get_peering(namespace=ns, name=PEERING),
            namespaces=[None],
            priority=priority,
        )

    assert gate(100)() is False
    assert gate(200)() is True

    live.apply(kube, live.sync_manifest("one"), namespace=NS)
    wait_for(
        lambda: get(kube, "deployment", naming.worker_name("one"), NS),
        what="the active peer to create the worker",
    )
    wait_for(lambda: _handled(high, "one"), what="the active peer's log")
    assert _handled(low, "one") == 0
    assert f"{NS}/one" not in low.log(), "the standby touched the object"

    # The active one stops (a rolling update, a drained node): it leaves the peering on the
    # way out, and the standby resumes without waiting for keep-alives to expire.
    resumed_before = low.count(RESUMED)
    high.stop()
    low.wait_log(RESUMED, count=resumed_before + 1, timeout_s=60)
    live.apply(kube, live.sync_manifest("two"), namespace=NS)
    wait_for(
        lambda: get(kube, "deployment", naming.worker_name("two"), NS),
        what="the former standby to create the worker",
    )
    wait_for(lambda: _handled(low, "two"), what="the former standby's log")
    assert _handled(high, "two") == 0
