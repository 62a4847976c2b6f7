"""The worker's Lease against a real kube-apiserver: two holders contend, one writes at a time.

Both holders use the project's own `KubeClient`, authenticated as the worker's ServiceAccount
with the Role the operator gives it (`rbac.role`), so the RBAC is the real one too: `create`
without resourceNames, `get`/`update` on the Lease's name only. Timings are shortened
(3 s lease) so expiry takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_asset_sync.resources import naming, rbac
from airflow_asset_sync.worker.clock import SystemClock
from airflow_asset_sync.worker.lease import KubeLeaseStore, LeaseHolder, LeaseTimings
from rig.kube import KubeRig
from support import live

pytestmark = [pytest.mark.rig]

TIMINGS = LeaseTimings(duration=3.0, renew_every=0.5, renew_deadline=2.0, retry_every=0.2)
SYNC = "contended"


def _worker_identity(kube: KubeRig, namespace: str) -> KubeLeaseStore:
    owner = naming.Owner(name=SYNC, namespace=namespace, uid="00000000-0000-0000-0000-000000000001")
    for obj in (rbac.role(owner), rbac.role_binding(owner)):
        # No owner references: nothing owns them on a bare API server anyway.
        obj["metadata"].pop("ownerReferences")
        kube.kubectl("apply", "-f", "-", input=json.dumps(obj))
    kubeconfig = kube.mint_service_account(namespace, naming.worker_name(SYNC))
    return KubeLeaseStore(
        live.kube_client_for(kubeconfig),
        namespace=namespace,
        name=naming.worker_name(SYNC),
        labels=naming.labels(SYNC),
    )


def _holder(store: KubeLeaseStore, name: str) -> LeaseHolder:
    return LeaseHolder(store, identity=name, clock=SystemClock(), timings=TIMINGS)


async def _sample_exclusive(holders: list[LeaseHolder], seconds: float) -> None:
    """Never two holders at once, checked every 50 ms."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert sum(h.is_held() for h in holders) <= 1
        await asyncio.sleep(0.05)


async def test_two_holders_one_at_a_time_release_hands_over_expiry_takes_over(
    kube: KubeRig,
) -> None:
    namespace = live.create_namespace(kube, "lease-contend")
    store = _worker_identity(kube, namespace)
    first, second, third = (_holder(store, f"pod-{n}_1") for n in "abc")
    stop_first, stop_second, stop_third = asyncio.Event(), asyncio.Event(), asyncio.Event()

    assert await asyncio.wait_for(first.acquire(stop_first), timeout=10)
    keep_first = asyncio.create_task(first.keep(stop_first))
    waiting = asyncio.create_task(second.acquire(stop_second))
    # Longer than the lease: the first keeps renewing, so the second never gets it.
    await _sample_exclusive([first, second], 2 * TIMINGS.duration)
    assert first.is_held() and not waiting.done()
    lease = live.get(kube, "lease", naming.worker_name(SYNC), namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == "pod-a_1"

    # Graceful stop: the first stops renewing, releases; the second takes it right away.
    stop_first.set()
    await keep_first
    released_at = time.monotonic()
    await first.release()
    assert await asyncio.wait_for(waiting, timeout=5)
    handover_s = time.monotonic() - released_at
    assert handover_s < 1.5, handover_s
    assert second.is_held() and not first.is_held()
    keep_second = asyncio.create_task(second.keep(stop_second))

    # The second dies without a goodbye: the third takes over only once the lease expired.
    contender = asyncio.create_task(third.acquire(stop_third))
    await _sample_exclusive([second, third], 1.0)
    assert not contender.done()
    keep_second.cancel()
    await asyncio.gather(keep_second, return_exceptions=True)
    died_at = time.monotonic()
    assert await asyncio.wait_for(contender, timeout=3 * TIMINGS.duration)
    took_over_s = time.monotonic() - died_at
    assert TIMINGS.duration - 1.0 <= took_over_s <= TIMINGS.duration + 2.0, took_over_s
    lease = live.get(kube, "lease", naming.worker_name(SYNC), namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "pod-c_1"
    assert lease["spec"]["leaseTransitions"] == 2
    stop_third.set()
    await third.release()


def test_the_worker_role_cannot_touch_another_lease(kube: KubeRig) -> None:
    namespace = live.create_namespace(kube, "lease-rbac")
    _worker_identity(kube, namespace)
    kube.kubectl(
        "-n", namespace, "create", "-f", "-",
        input=json.dumps(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "someone-elses"},
                "spec": {"holderIdentity": "them"},
            }
        ),
    )  # fmt: skip
    worker = kube.mint_service_account(namespace, naming.worker_name(SYNC))
    for verb in ("get", "update", "delete"):
        allowed = kube.kubectl(
            "auth", "can-i", verb, "leases/someone-elses", "-n", namespace,
            kubeconfig=worker, check=False,
        ).stdout.strip()  # fmt: skip
        assert allowed == "no", verb
    own = f"leases/{naming.worker_name(SYNC)}"
    for verb in ("get", "update"):
        assert kube.kubectl(
            "auth", "can-i", verb, own, "-n", namespace, kubeconfig=worker, check=False
        ).stdout.strip() == "yes", verb  # fmt: skip
