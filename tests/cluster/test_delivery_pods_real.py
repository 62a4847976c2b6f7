"""Delivery mode oneRunPerEvent in a worker pod: held events in the AirflowAssetSync's status.

The worker runs in a pod the real kubelet starts (chart operator, `rig.cluster`), writing to a
real Airflow 3.3 through Kafka. A consumer DAG scheduled on two assets (Airflow's AND) keeps
the first asset's event queued, so the worker holds that asset's next events: a user sees
them in `status.targets[].parked` with `reason: awaitingConsumer` (the status subresource of
the real API server, so the CRD's status schema must keep the field), while another asset
with a consumer that runs gets one run per event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.cluster import ClusterRig
from rig.kafka import KafkaBroker
from rig.sync import await_delivery
from support import live, pods
from support.pods import restricted_namespace
from support.release import Release

pytestmark = [pytest.mark.rig, pytest.mark.slow]


def test_held_events_show_in_the_sync_status_while_another_asset_flows(
    cluster: ClusterRig,
    operator_release: Release,
    airflow2: AirflowInstance,
    airflow3: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
) -> None:
    ns = restricted_namespace(cluster, "delivery")
    for name, instance in (("src", airflow2), ("dst", airflow3)):
        cluster.kubectl(
            "-n", ns, "create", "secret", "generic", name,
            f"--from-literal=username={instance.username}",
            f"--from-literal=password={instance.password}",
        )  # fmt: skip
    stuck, other, flowing = assets.take(3)
    stuck_dag = airflow3.add_consumer([stuck, other])
    flowing_dag = airflow3.add_consumer([flowing])
    sync = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": "held", "namespace": ns},
        "spec": {
            "source": {"url": airflow2.pods_url, "auth": {"basic": {"secretName": "src"}}},
            "targets": [
                {
                    "name": "t",
                    "url": airflow3.pods_url,
                    "auth": {"password": {"secretName": "dst"}},
                    "delivery": {"mode": "oneRunPerEvent"},
                }
            ],
            "assets": {"include": [{"glob": stuck}, {"glob": flowing}]},
            "kafka": {"bootstrapServers": [kafka.pods_bootstrap], "topic": "pods-delivery"},
            "pollInterval": "500ms",
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sync))
    cluster.wait_for("--for=condition=Ready", "aas/held", namespace=ns, timeout_s=180)
    pods.one_ready_pod(
        cluster, ns, "app.kubernetes.io/component=worker,app.kubernetes.io/instance=held"
    )

    with airflow2.client() as c:
        held = [airflow2.create_event(stuck, {"n": i}, c)["id"] for i in range(3)]
        moving = [airflow2.create_event(flowing, {"n": i}, c)["id"] for i in range(3)]

    counts = await_delivery(airflow3, [flowing], airflow2.pods_url, set(moving), timeout_s=120)
    assert counts == dict.fromkeys(moving, 1)
    assert len(airflow3.wait_for_runs(flowing_dag, 3, timeout_s=120)) == 3

    def held_in_status() -> list[int] | None:
        obj = live.get(cluster, pods.AAS, "held", ns)
        targets: list[dict[str, Any]] = ((obj or {}).get("status") or {}).get("targets") or []
        parked = {a["uri"]: a for a in (targets[0].get("parked") or [])} if targets else {}
        if stuck not in parked:
            return None
        assert parked[stuck]["reason"] == "awaitingConsumer"
        assert not targets[0].get("unknownAssets")
        return [e["id"] for e in parked[stuck]["events"]]

    assert live.wait_for(held_in_status, what="held events in status", timeout_s=90) == held[1:]
    assert await_delivery(airflow3, [stuck], airflow2.pods_url, {held[0]}) == {held[0]: 1}
    assert airflow3.queued_dags(stuck) == [stuck_dag]
    assert airflow3.dag_runs(stuck_dag) == []
    cluster.kubectl("-n", ns, "delete", "aas", "held", "--wait=true", "--timeout=120s")
