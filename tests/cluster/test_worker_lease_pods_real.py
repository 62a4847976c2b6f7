"""One writer per sync on real pods: a worker pod deleted while its target is stalled.

The race this guards against (seen on a real cluster: 4 and 6 duplicates in two runs, one
source event written twice 7 ms apart): `Recreate` keeps worker pods apart only during a
rollout. A deleted pod's replacement starts at once, while the old pod keeps replaying during
its grace period; the new pod's after-crash dedup listing ran before the old pod's writes
landed, so it wrote them again. With the worker's Lease the replacement waits until the old
pod released it (after its last write), then lists and finds every marker.

In-process sync (no Kafka: that is where it happened), Airflow 3.3 to Airflow 3.3. The
target's API server is SIGSTOPped, so the old pod's writes hang, then SIGCONTed once the
replacement pod exists.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.cluster import ClusterRig
from support import live, pods
from support.pods import restricted_namespace
from support.release import Release
from support.stream import Verdict, await_verdict, delivery, note, source_ids

pytestmark = [pytest.mark.rig, pytest.mark.slow]

EVENTS = 30
SYNC = "lease-race"


def _selector(sync: str) -> str:
    return f"app.kubernetes.io/component=worker,app.kubernetes.io/instance={sync}"


def _live_pods(cluster: ClusterRig, namespace: str) -> list[dict[str, Any]]:
    return [
        p
        for p in pods.pods(cluster, namespace, _selector(SYNC))
        if not p["metadata"].get("deletionTimestamp")
    ]


def _running(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return any("running" in (s.get("state") or {}) for s in statuses)


def test_pod_deleted_while_the_target_stalls_writes_each_event_once(
    cluster: ClusterRig,
    operator_release: Release,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
) -> None:
    ns = restricted_namespace(cluster, "lease-race")
    (uri,) = assets.take(1)
    for name, instance in (("src", airflow3), ("dst", airflow3b)):
        cluster.kubectl(
            "-n", ns, "create", "secret", "generic", name,
            f"--from-literal=username={instance.username}",
            f"--from-literal=password={instance.password}",
        )  # fmt: skip
    sync = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": SYNC, "namespace": ns},
        "spec": {
            "source": {"url": airflow3.pods_url, "auth": {"password": {"secretName": "src"}}},
            "targets": [
                {
                    "name": "t",
                    "url": airflow3b.pods_url,
                    "auth": {"password": {"secretName": "dst"}},
                }
            ],
            "assets": {"include": [{"glob": uri}]},
            "pollInterval": "500ms",
            "startFrom": "latest",
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sync))
    cluster.wait_for("--for=condition=Ready", f"aas/{SYNC}", namespace=ns, timeout_s=180)
    # Ready: the checkpoint is initialised ("latest"). The replayer has met the target (so
    # it has nothing left to ask it before writing) once it says it replays into it.
    first = pods.one_ready_pod(cluster, ns, _selector(SYNC))
    live.wait_for(
        lambda: "replaying into target" in pods.logs(cluster, ns, first["metadata"]["name"]),
        what="the first pod's replayer connected to the target",
        timeout_s=60,
    )

    api = airflow3b.servers[0]
    api.kill(signal.SIGSTOP)  # the target stalls: writes hang instead of failing
    try:
        for n in range(EVENTS):
            airflow3.create_event(uri, {"n": n})
        # The pod reads the events and its first write hangs in the stalled target until the
        # client's 15 s timeout, which it logs. (Not `eventsPublished`: without Kafka a publish
        # returns only once every target committed, so it stays 0 while the target stalls.)
        # The request itself sits in the stalled server's socket and is served on SIGCONT: a
        # write of the old pod that lands late, after its replacement started.
        live.wait_for(
            lambda: "target write failed" in pods.logs(cluster, ns, first["metadata"]["name"]),
            what="the first pod's write to hang and time out",
            timeout_s=120,
            interval_s=1.0,
        )
        cluster.kubectl("-n", ns, "delete", "pod", first["metadata"]["name"], "--wait=false")
        second = live.wait_for(
            lambda: next(
                (
                    p
                    for p in _live_pods(cluster, ns)
                    if p["metadata"]["uid"] != first["metadata"]["uid"] and _running(p)
                ),
                None,
            ),
            what="the ReplicaSet's replacement pod running",
            timeout_s=120,
        )
        # The replacement is up and waits for the old pod's Lease (without one it would list
        # the target and write right now).
        live.wait_for(
            lambda: (
                "lease held by another worker" in pods.logs(cluster, ns, second["metadata"]["name"])
            ),
            what="the replacement to wait for the Lease",
            timeout_s=60,
        )
    finally:
        api.kill(signal.SIGCONT)

    verdict = await_verdict(airflow3, airflow3b, [uri], airflow3.pods_url, timeout_s=180)
    assert verdict.ok, verdict.summary()
    # The old pod's container is gone (the kubelet reported it): nothing of it can still write.
    live.wait_for(
        lambda: live.get(cluster, "pod", first["metadata"]["name"], ns) is None,
        what="the deleted pod gone",
        timeout_s=120,
    )
    final = Verdict.of(source_ids(airflow3, [uri]), delivery(airflow3b, [uri], airflow3.pods_url))
    new_log = pods.logs(cluster, ns, second["metadata"]["name"])
    note(
        "lease-pod-delete-stalled-target",
        events=final.expected,
        lost=len(final.lost),
        duplicated=len(final.duplicated),
    )
    assert final.expected == EVENTS
    assert final.ok, final.summary()
    assert "lease acquired" in new_log, new_log[-3000:]
