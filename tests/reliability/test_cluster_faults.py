"""Faults 5 and 6: the control plane breaks while 2,000 events flow through the cluster path.

The whole product path runs on real parts: the AirflowAssetSync is applied to the rig's
kube-apiserver, the operator (a real process, with exactly the operator's RBAC) makes the
worker's children, the worker runs as its Deployment's pod would (a local process with the
Deployment's env, as its ServiceAccount) and keeps its offsets in the CR's status, Kafka
carries the events, and both ends are real Airflow 3.3.

5. the kube-apiserver is restarted, several times, while the worker patches its status;
6. the operator is SIGKILLed while it reconciles (a spec change that rolls the worker, a
   deleted child, its own resume at start-up) and started again.

Verdict: every source event in the target exactly once (by marker), the worker never
crashed, and the status in the CR ends consistent with what the worker did.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.kafka import KafkaBroker
from rig.kube import KubeRig
from rig.sync import sync_manifests
from support import live
from support.stream import EventStream, Verdict, await_verdict, delivery, note, source_ids
from support.sync_cluster import SyncCluster

pytestmark = [pytest.mark.rig, pytest.mark.slow]

EVENTS = 2000


@pytest.fixture
def crd(kube: KubeRig) -> KubeRig:
    kube.kubectl("apply", "--server-side", "-f", str(live.SYNC_CRD))
    live.wait_established(kube, "airflowassetsyncs.airflow-asset-sync.github.io")
    live.install_operator_rbac(kube)
    return kube


def _cluster(
    kube: KubeRig,
    name: str,
    source: AirflowInstance,
    target: AirflowInstance,
    uris: list[str],
    kafka: KafkaBroker,
    topic: str,
    workdir: Path,
) -> SyncCluster:
    docs = sync_manifests(
        name, source, [("t", target)], include=uris, kafka=kafka.bootstrap, topic=topic
    )
    return SyncCluster(kube, namespace=f"rel-{name}", manifests=docs, workdir=workdir)


def _finish(
    cluster: SyncCluster, source: AirflowInstance, target: AirflowInstance, uris: list[str]
) -> Verdict:
    """All delivered (or time up), then a graceful stop of the worker and a final recount."""

    def alive() -> None:
        assert cluster.pod.running, f"the worker died:\n{cluster.pod.log_tail()}"

    await_verdict(source, target, uris, source.url, timeout_s=300, alive=alive)
    assert cluster.pod.stop() == 0, cluster.pod.log_tail()
    return Verdict.of(source_ids(source, uris), delivery(target, uris, source.url))


# -- 5. the kube-apiserver restarted while the worker patches status ----------------------------


def test_apiserver_restarts_while_the_worker_patches_status(
    crd: KubeRig,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    """Two restarts of the API server (SIGTERM, down 2-8 s, start, serving again) during the
    stream. The worker saves its checkpoint into status after every publish, so each
    outage lands on status patches in flight; they must be retried, not crash the worker or
    skip a checkpoint, and the operator's watches must recover."""
    started = time.monotonic()
    kube = crd
    uris = assets.take(4)
    cluster = _cluster(kube, "apiserver", airflow3, airflow3b, uris, kafka, kafka_topic, tmp_path)
    rng = random.Random(5)
    restarts: list[float] = []
    try:
        cluster.start()
        stream = EventStream(airflow3, uris, total=EVENTS, rate=30.0, label="apiserver").start()
        for fraction in (0.15, 0.55):
            stream.wait_for(int(EVENTS * fraction))
            patches_before = cluster.pod.metric("aas_events_published_total")
            assert patches_before >= 1
            down_s = rng.uniform(2.0, 8.0)
            began = time.monotonic()
            kube.restart_apiserver(down_s=down_s)
            restarts.append(round(time.monotonic() - began, 1))
            assert cluster.pod.running, cluster.pod.log_tail()
        stream.join()
        verdict = _finish(cluster, airflow3, airflow3b, uris)

        # The status the worker left behind is what it did: its checkpoint covers the newest
        # source event, and the operator still owns its conditions.
        status = cluster.status()
        checkpoint = status["source"]["checkpoint"]
        newest = max(source_ids(airflow3, uris))
        assert checkpoint["timestamp"]
        assert newest in checkpoint["seenIds"]
        assert status["targets"][0]["eventsReplayed"] >= 1
        assert status["observedGeneration"] == cluster.sync()["metadata"]["generation"]
        patch_retries = cluster.pod.log().count("status patch failed; retrying")
        worker_log = cluster.pod.log()
    finally:
        cluster.stop()
    note(
        "fault5-apiserver-restart",
        events=verdict.expected,
        restarts=len(restarts),
        restart_s=restarts,
        status_patch_retries=patch_retries,
        lost=len(verdict.lost),
        duplicated=len(verdict.duplicated),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert patch_retries >= 1, "no status patch was in flight during an outage"
    assert "Traceback" not in worker_log
    assert verdict.expected >= EVENTS
    assert verdict.ok, verdict.summary()


# -- 6. the operator killed during reconcile and restarted ------------------------------------


def test_operator_killed_during_reconcile_and_restarted(
    crd: KubeRig,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    """Four rounds while the stream flows. Each makes the operator reconcile and SIGKILLs it
    at a random point 0-0.6 s later: a spec change (pollInterval, which rolls the worker: the
    test, as kubelet, replaces the pod), or a deleted child (the worker's Role). Every other
    round the restarted operator is killed again 0.2-2 s into its start-up resume. After each
    round the sync must converge: children back, current generation observed, Ready."""
    started = time.monotonic()
    kube = crd
    uris = assets.take(4)
    cluster = _cluster(kube, "operator", airflow3, airflow3b, uris, kafka, kafka_topic, tmp_path)
    rng = random.Random(6)
    kills = resume_kills = unfinished = 0
    rolls_before = 0
    succeeded = re.compile(r"Handler 'reconcile' succeeded")
    try:
        cluster.start()
        rolls_before = cluster.pod.starts
        stream = EventStream(airflow3, uris, total=EVENTS, rate=30.0, label="operator").start()
        for round_no in range(4):
            done_before = len(succeeded.findall(cluster.operator.log()))
            if round_no % 2 == 0:
                interval = "300ms" if round_no % 4 == 0 else "250ms"
                cluster.patch_spec({"pollInterval": interval})
            else:
                kube.kubectl("delete", "role", cluster.pod.deployment_name, "-n", cluster.namespace)
            time.sleep(rng.uniform(0.0, 0.6))  # a random point in the reconcile
            cluster.operator.kill()
            kills += 1
            if len(succeeded.findall(cluster.operator.log())) == done_before:
                unfinished += 1
            cluster.operator.start()
            if round_no % 2 == 1:
                time.sleep(rng.uniform(0.2, 2.0))  # a random point in the resume at start
                cluster.operator.kill()
                kills += 1
                resume_kills += 1
                cluster.operator.start()
            cluster.wait_converged()
            assert cluster.pod.running, cluster.pod.log_tail()
        stream.join()
        verdict = _finish(cluster, airflow3, airflow3b, uris)
        status = cluster.status()
        sync = cluster.sync()
        operator_log = cluster.operator.log_path.read_text(errors="replace")
        rolls = cluster.pod.starts - rolls_before
    finally:
        cluster.stop()
    note(
        "fault6-operator-killed",
        events=verdict.expected,
        operator_kills=kills,
        killed_before_reconcile_finished=unfinished,
        killed_during_resume=resume_kills,
        worker_rollouts=rolls,
        lost=len(verdict.lost),
        duplicated=len(verdict.duplicated),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert kills >= 6
    assert unfinished >= 1, "no kill landed before a reconcile finished"
    assert rolls >= 2  # every spec change rolled the worker exactly as a Deployment would
    assert status["observedGeneration"] == sync["metadata"]["generation"]
    assert "Traceback" not in operator_log
    assert verdict.expected >= EVENTS
    assert verdict.ok, verdict.summary()
