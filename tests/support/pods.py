"""Helpers for tests on the real cluster's pods: read pods, kill containers, follow the README.

Nothing here plays a kubelet or a controller: it only reads what they did, or does what a
user or an outage would do (delete a pod, kill a container's process, change a Secret).
"""

from __future__ import annotations

import json
import signal
from typing import Any

from rig.cluster import ClusterRig
from support import chart, live
from support.packaging_tools import CHART

AAS = "airflowassetsyncs.airflow-asset-sync.github.io"
OPERATOR_NS = "aas-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=airflow-asset-sync,app.kubernetes.io/component=operator"


def restricted_namespace(cluster: ClusterRig, name: str) -> str:
    """A namespace that enforces the `restricted` Pod Security level, as platform teams do."""
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return name


def install_operator(cluster: ClusterRig) -> None:
    """`helm install` as the README says, with the locally built image (never pulled), into
    a `restricted` namespace."""
    restricted_namespace(cluster, OPERATOR_NS)
    repository, tag = cluster.project_image.rsplit(":", 1)
    chart.helm(
        "install",
        "aas",
        str(CHART),
        "--namespace",
        OPERATOR_NS,
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout=240s",
        kubeconfig=cluster.kubeconfig,
        timeout_s=300,
    )


def namespaces(cluster: ClusterRig) -> list[str]:
    out = cluster.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def pods(cluster: ClusterRig, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    cond = live.condition(pod, "Ready")
    return bool(cond and cond["status"] == "True") and not pod["metadata"].get("deletionTimestamp")


def ready_pods(cluster: ClusterRig, namespace: str, selector: str) -> list[dict[str, Any]]:
    return [p for p in pods(cluster, namespace, selector) if ready(p)]


def one_ready_pod(
    cluster: ClusterRig, namespace: str, selector: str, *, timeout_s: float = 120
) -> dict[str, Any]:
    """Wait until exactly one pod of `selector` is Ready (and none is terminating)."""

    def probe() -> dict[str, Any] | None:
        all_pods = pods(cluster, namespace, selector)
        live_pods = [p for p in all_pods if not p["metadata"].get("deletionTimestamp")]
        if len(live_pods) == 1 and len(all_pods) == 1 and ready(live_pods[0]):
            return live_pods[0]
        return None

    return live.wait_for(
        probe, what=f"one Ready pod {selector} in {namespace}", timeout_s=timeout_s
    )


def restart_count(pod: dict[str, Any]) -> int:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def container_pid(cluster: ClusterRig, pod: dict[str, Any]) -> int:
    """The host pid of the pod's (first) container's main process, from containerd."""
    (status, *_) = pod["status"]["containerStatuses"]
    container_id = status["containerID"].removeprefix("containerd://")
    for line in cluster.ctr("tasks", "ls").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"no running task for container {container_id}")


def kill_container(cluster: ClusterRig, pod: dict[str, Any]) -> None:
    """SIGKILL the container's process, as an OOM kill or a crash would end it."""
    import os

    os.kill(container_pid(cluster, pod), signal.SIGKILL)


def logs(cluster: ClusterRig, namespace: str, pod: str, *, previous: bool = False) -> str:
    args = ["logs", "-n", namespace, pod] + (["--previous"] if previous else [])
    return cluster.kubectl(*args, check=False).stdout


def sync_ready(cluster: ClusterRig, namespace: str, name: str) -> dict[str, Any] | None:
    sync = live.get(cluster, AAS, name, namespace)
    cond = live.condition(sync, "Ready")
    return sync if cond and cond["status"] == "True" else None
