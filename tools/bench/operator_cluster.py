"""(5b) The operator at scale on the real cluster: its pod, the real controllers, real pods.

`bench.operator_scale` measures the operator against a bare API server, where the bench
plays the Deployment controller. This section installs the chart with `helm install` into
the rig's single-node cluster (`rig.cluster`: kubelet, kube-controller-manager with its
Deployment controller and garbage collector, kube-scheduler, kube-proxy, CoreDNS) and
measures the operator *pod*:

- `suspended` syncs (`spec.suspend: true`) applied at once with `kubectl apply
  --server-side`: time until every one shows Ready=False/Suspended for its generation and
  the real Deployment controller has observed every worker Deployment (scaled to zero), and
  the operator container's peak RSS (VmHWM of its process, read from the host);
- then `live` syncs between two real Airflow 3.3 instances, each with a worker pod that the
  kubelet starts from the project's image: time until all are Ready (pod start-up, image
  already on the node, readiness probe), and the operator's RSS with all of them.

Why not 1,000 live syncs: one node runs at most `maxPods` (60 in the rig, 110 by default in
Kubernetes) pods, and 1,000 worker processes would need tens of GiB. So the 1,000 are
suspended: every object the operator makes still exists and is reconciled by the real
controllers; only the pods are absent. Run on its own: `python -m bench.operator_cluster`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import QUICK, Results, cpu_seconds, log, memory
from bench.stack import Stack
from rig.airflow import AirflowInstance
from rig.cluster import ClusterRig
from rig.procs import REGISTRY
from support import live, pods
from support.pods import OPERATOR_NS, OPERATOR_SELECTOR, restricted_namespace

NAMESPACE = "bench-cluster"
SUSPENDED_READY_TARGET_S = 60.0
RSS_TARGET_MIB = 200.0
TIMEOUT_S = 600.0
#: A live worker polls this often: the bench measures the operator, not the sources' load.
LIVE_POLL = "30s"


def _apply(cluster: ClusterRig, manifests: list[dict[str, Any]]) -> float:
    t0 = time.monotonic()
    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=bench-gitops",
        "-n",
        NAMESPACE,
        "-f",
        "-",
        input=yaml.safe_dump_all(manifests),
        timeout_s=900,
    )
    return time.monotonic() - t0


def _items(cluster: ClusterRig, kind: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-n", NAMESPACE, "-o", "json", timeout_s=120).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _converged_suspended(sync: dict[str, Any]) -> bool:
    ready = live.condition(sync, "Ready") or {}
    reconciling = live.condition(sync, "Reconciling") or {}
    return (
        ready.get("reason") == "Suspended"
        and reconciling.get("status") != "True"
        and sync.get("status", {}).get("observedGeneration") == sync["metadata"]["generation"]
    )


def _observed(deploy: dict[str, Any]) -> bool:
    observed = deploy.get("status", {}).get("observedGeneration")
    return bool(observed == deploy["metadata"]["generation"])


def _ready(sync: dict[str, Any]) -> bool:
    return (live.condition(sync, "Ready") or {}).get("status") == "True"


def _operator_pid(cluster: ClusterRig) -> int:
    return pods.container_pid(cluster, pods.one_ready_pod(cluster, OPERATOR_NS, OPERATOR_SELECTOR))


def _wait(
    cluster: ClusterRig, done: Any, *, what: str, count: int
) -> tuple[float | None, int, list[dict[str, Any]]]:
    """Poll until `done(syncs, deployments)` holds; (seconds, syncs converged, syncs)."""
    t0 = time.monotonic()
    syncs: list[dict[str, Any]] = []
    converged = 0
    while time.monotonic() - t0 < TIMEOUT_S:
        syncs = _items(cluster, "aas")
        deployments = _items(cluster, "deployments")
        converged = done(syncs, deployments)
        if converged >= count:
            return time.monotonic() - t0, converged, syncs
        time.sleep(1.0)
    log(f"operator-cluster: {what}: {converged}/{count} after {TIMEOUT_S:.0f} s")
    return None, converged, syncs


def run_operator_cluster(
    stack: Stack, results: Results, *, suspended: int, live_syncs: int
) -> dict[str, Any]:
    cluster = ClusterRig(workdir=stack.workdir / "cluster")
    figures: dict[str, Any] = {"suspended": suspended, "live": live_syncs}
    cluster.start()
    try:
        pods.install_operator(cluster)
        restricted_namespace(cluster, NAMESPACE)
        source, target = stack.airflows("a3s", "a3t")
        for name, instance in (("bench-src", source), ("bench-tgt", target)):
            cluster.kubectl(
                "apply",
                "-n",
                NAMESPACE,
                "-f",
                "-",
                input=json.dumps(
                    live.secret(name, username=instance.username, password=instance.password)
                ),
            )
        pid = _operator_pid(cluster)
        idle = memory(pid)
        figures["operator_rss_idle_mib"] = round(idle.rss_mib, 1)
        figures.update(_suspended_phase(cluster, pid, source, target, count=suspended))
        figures.update(_live_phase(cluster, pid, source, target, count=live_syncs))
    finally:
        results.record("operator_cluster", **figures)
        cluster.stop()
    _checks(results, figures)
    return figures


def _manifest(
    name: str, source: AirflowInstance, target: AirflowInstance, **spec: Any
) -> dict[str, Any]:
    manifest = live.sync_manifest(name, source_secret="bench-src", target_secret="bench-tgt")
    manifest["spec"]["source"]["url"] = source.pods_url
    manifest["spec"]["targets"][0]["url"] = target.pods_url
    manifest["spec"].update(spec)
    return manifest


def _suspended_phase(
    cluster: ClusterRig, pid: int, source: AirflowInstance, target: AirflowInstance, *, count: int
) -> dict[str, Any]:
    log(f"operator-cluster: applying {count} suspended syncs")
    manifests = [
        _manifest(f"z{i:04d}", source, target, suspend=True, pollInterval=LIVE_POLL)
        for i in range(count)
    ]
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    apply_s = _apply(cluster, manifests)

    def done(syncs: list[dict[str, Any]], deployments: list[dict[str, Any]]) -> int:
        observed = sum(1 for d in deployments if _observed(d))
        settled = sum(1 for s in syncs if _converged_suspended(s))
        return min(observed, settled)

    waited, converged, _ = _wait(cluster, done, what="suspended", count=count)
    mem = memory(pid)
    return {
        "suspended_apply_s": round(apply_s, 2),
        "suspended_converged_s": round(apply_s + waited, 2) if waited is not None else None,
        "suspended_converged": converged,
        "suspended_wall_s": round(time.monotonic() - t0, 2),
        "suspended_operator_cpu_s": round(cpu_seconds(pid) - cpu0, 1),
        "suspended_operator_rss_mib": round(mem.rss_mib, 1),
        "suspended_operator_hwm_mib": round(mem.hwm_mib, 1),
        "load_after_suspended": [round(v, 2) for v in os.getloadavg()],
    }


def _live_phase(
    cluster: ClusterRig, pid: int, source: AirflowInstance, target: AirflowInstance, *, count: int
) -> dict[str, Any]:
    log(f"operator-cluster: applying {count} live syncs (a worker pod each)")
    manifests = [
        _manifest(
            f"l{i:03d}",
            source,
            target,
            pollInterval=LIVE_POLL,
            # An asset no one makes events for: the workers connect and poll, nothing more.
            assets={"include": [{"glob": f"bench://operator-cluster/{i}"}]},
        )
        for i in range(count)
    ]
    apply_s = _apply(cluster, manifests)
    names = {m["metadata"]["name"] for m in manifests}

    def done(syncs: list[dict[str, Any]], _: list[dict[str, Any]]) -> int:
        return sum(1 for s in syncs if s["metadata"]["name"] in names and _ready(s))

    waited, ready, _ = _wait(cluster, done, what="live", count=count)
    running = sum(
        1
        for p in _items(cluster, "pods")
        if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "worker"
        and pods.ready(p)
    )
    mem = memory(pid)
    return {
        "live_apply_s": round(apply_s, 2),
        "live_ready_s": round(apply_s + waited, 2) if waited is not None else None,
        "live_ready": ready,
        "live_worker_pods_ready": running,
        "operator_rss_mib": round(mem.rss_mib, 1),
        "operator_hwm_mib": round(mem.hwm_mib, 1),
        "load_after_live": [round(v, 2) for v in os.getloadavg()],
    }


def _checks(results: Results, figures: dict[str, Any]) -> None:
    count, converged_s = figures.get("suspended"), figures.get("suspended_converged_s")
    results.check(
        "operator_cluster",
        f"{count} suspended syncs converged on the real cluster",
        converged_s,
        unit="s",
        target=f"<= {SUSPENDED_READY_TARGET_S:.0f} s",
        passed=converged_s is not None and converged_s <= SUSPENDED_READY_TARGET_S,
        note=f"kubectl apply --server-side {figures.get('suspended_apply_s')} s; every worker "
        "Deployment observed by the real Deployment controller; operator CPU "
        f"{figures.get('suspended_operator_cpu_s')} s",
    )
    hwm = figures.get("operator_hwm_mib")
    results.check(
        "operator_cluster",
        f"Operator pod's peak RSS with {count} syncs ({figures.get('live')} live)",
        hwm,
        unit="MiB",
        target=f"<= {RSS_TARGET_MIB:.0f} MiB",
        passed=hwm is not None and hwm <= RSS_TARGET_MIB,
        note=f"{figures.get('operator_rss_idle_mib')} MiB with no syncs; "
        f"{figures.get('suspended_operator_hwm_mib')} MiB after the suspended ones",
    )
    live_s = figures.get("live_ready_s")
    results.check(
        "operator_cluster",
        f"{figures.get('live')} live syncs Ready, a worker pod each",
        live_s,
        unit="s",
        target="",
        passed=None,
        note=f"{figures.get('live_worker_pods_ready')} worker pods ready; image on the node, "
        "no pull",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operator_cluster")
    parser.add_argument("--suspended", type=int, default=1000)
    parser.add_argument("--live", type=int, default=40)
    args = parser.parse_args(argv)
    stack = Stack(Path(tempfile.mkdtemp(prefix="aas-bench-cluster-")))
    results = Results(profile=QUICK)
    try:
        run_operator_cluster(stack, results, suspended=args.suspended, live_syncs=args.live)
    finally:
        REGISTRY.stop_all()
    print(json.dumps(results.figures, indent=1))
    for check in results.checks:
        print(f"{check.name}: {check.value} {check.unit} ({check.target}) {check.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
