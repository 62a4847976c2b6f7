"""The whole product path on real parts: CR, operator, worker pod, Airflow, Kafka, Airflow.

The rig's API server runs no kubelet, so the test acts as one for the worker Deployment the
operator made: it starts that container's command as a local process with exactly the env the
Deployment declares (secretKeyRef values read from the Secrets), authenticated as the pod's
ServiceAccount (so the worker's Role is what lets it read its sync and write its status), and
probes it on the paths the Deployment's probes name. It then plays the Deployment controller
(availableReplicas) so the operator can report Ready.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from operator_cases import live
from rig.airflow import CONSUMED, AirflowInstance
from rig.cache import ROOT
from rig.kube import KubeRig
from rig.procs import Server, free_port
from rig.sync import await_delivery, sync_manifests

pytestmark = [pytest.mark.rig, pytest.mark.slow]


def _env_from_container(kube: KubeRig, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = live.get(kube, "secret", ref["name"], namespace)
            assert secret is not None, f"Secret {ref['name']} missing"
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.namespace": namespace}.get(path, "")
        else:
            raise AssertionError(f"unsupported env source {source}")
    return env


class LocalPod:
    """The worker Deployment's pod, run as a local process (the test is the kubelet)."""

    def __init__(
        self, kube: KubeRig, namespace: str, deployment: dict[str, Any], workdir: Path
    ) -> None:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        self.port = free_port()
        self.readiness_path = container["readinessProbe"]["httpGet"]["path"]
        self.liveness_path = container["livenessProbe"]["httpGet"]["path"]
        sa_kubeconfig = kube.mint_service_account(namespace, pod["serviceAccountName"])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AAS_", "KUBERNETES_"))}
        env.update(_env_from_container(kube, namespace, container))
        env.update(KUBECONFIG=str(sa_kubeconfig), PYTHONPATH=str(ROOT / "operator"))
        # The image's entrypoint is `airflow-asset-sync`; only the port is moved off 8080,
        # since every "pod" here shares the loopback interface.
        argv = [*container.get("command", []), *container["args"], "--metrics-port", str(self.port)]
        self.server = Server(
            "worker-pod",
            [sys.executable, "-m", "airflow_asset_sync", *argv],
            log_path=workdir / "worker-pod.log",
            env=env,
        )

    def probe(self, path: str) -> bool:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code == 200

    def start(self) -> None:
        self.server.start()
        self.server.wait_ready(lambda: self.probe(self.readiness_path), timeout_s=90, what="ready")


@pytest.fixture
def crd(kube: KubeRig) -> KubeRig:
    kube.kubectl("apply", "--server-side", "-f", str(live.SYNC_CRD))
    live.wait_established(kube, "airflowassetsyncs.airflow-asset-sync.github.io")
    live.install_operator_rbac(kube)
    return kube


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Everything a test starts is stopped at its end."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        item.stop() if hasattr(item, "stop") else item.server.stop()


def test_cr_to_operator_to_worker_pod_to_events_and_status(
    crd: KubeRig,
    kafka: Any,
    kafka_topic: str,
    airflow2: AirflowInstance,
    airflow3: AirflowInstance,
    started: list[Any],
    tmp_path: Path,
) -> None:
    kube = crd
    ns = live.create_namespace(kube, "full-path")
    operator = live.OperatorProcess(
        kube,
        name="full-path",
        kubeconfig=live.operator_identity(kube, name="full-path-operator", namespaces=[ns]),
        args=("--standalone", "--namespace", ns),
    )
    operator.start()
    started.append(operator)

    uri, dag_id = CONSUMED[5], "consume_c5"
    docs = sync_manifests(
        "orders",
        airflow2,
        [("v3", airflow3)],
        include=[uri],
        kafka=kafka.bootstrap,
        topic=kafka_topic,
    )
    for doc in docs:
        doc["metadata"]["namespace"] = ns
    live.apply(kube, *docs)

    deployment = live.wait_for(
        lambda: live.get(kube, "deployment", "orders-worker", ns),
        what="the worker Deployment",
        timeout_s=60,
    )
    pod = LocalPod(kube, ns, deployment, tmp_path)
    pod.start()
    started.append(pod)
    assert pod.probe(pod.liveness_path)
    live.act_as_deployment_controller(kube, ns, "orders-worker", ready=True)

    runs_before = len(airflow3.dag_runs(dag_id))
    created = {airflow2.create_event(uri, {"path": "full"})["id"] for _ in range(3)}
    assert await_delivery(airflow3, [uri], airflow2.url, created) == dict.fromkeys(created, 1)
    airflow3.wait_for_runs(dag_id, runs_before + 1)

    def status_caught_up() -> dict[str, Any] | None:
        sync = live.get(kube, api_kind(), "orders", ns)
        status = (sync or {}).get("status") or {}
        source, targets = status.get("source") or {}, status.get("targets") or []
        ready = live.condition(sync, "Ready")
        if (
            source.get("eventsPublished", 0) >= 3
            and targets
            and targets[0].get("eventsReplayed", 0) >= 3
            and ready is not None
            and ready["status"] == "True"
        ):
            return status
        return None

    status = live.wait_for(status_caught_up, what="offsets and Ready=True in status", timeout_s=60)
    assert status["source"]["checkpoint"]["timestamp"]
    assert status["source"]["apiVersion"] == "v1"
    assert status["targets"][0]["name"] == "v3"
    assert status["targets"][0]["lastSourceEventId"] == max(created)
    assert status["observedGeneration"] >= 1

    table = kube.kubectl("get", "aas", "orders", "-n", ns).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:3] == ["NAME", "READY", "STATUS"]
    assert row[0] == "orders"
    assert row[1] == "True"
    assert "LAST" in header and "LAG" in header


def api_kind() -> str:
    return "airflowassetsyncs.airflow-asset-sync.github.io"
