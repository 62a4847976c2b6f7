"""(5) The operator with many AirflowAssetSync objects: time to all Ready, and its RSS.

The operator runs as a real process (`operator_cases.live.OperatorProcess`, under exactly
its chart's RBAC) against the rig's kube-apiserver. `operator_syncs` objects are applied in
one `kubectl apply`, the way a GitOps tool would land them.

A bare API server has no Deployment controller and no kubelet, so the bench plays the
Deployment controller: as soon as it sees a worker Deployment it writes the status a
finished rollout has (through the status subresource, with the Python client: one request
per Deployment, timed and reported). "Ready" therefore measures the operator's work plus an
instant rollout; in a cluster the pods' start-up comes on top.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.resources import naming
from bench.common import Results, Sampler, log, memory
from bench.profiling import Profiler
from bench.stack import Stack
from operator_cases import live

READY_TARGET_S = 60.0
RSS_TARGET_MIB = 200.0
NAMESPACE = "bench"
TIMEOUT_S = 300.0


def _clients(kubeconfig: Path) -> tuple[Any, Any]:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    api_client = k8s.ApiClient(configuration)
    return k8s.AppsV1Api(api_client), k8s.CustomObjectsApi(api_client)


def _rollout_status(deploy: Any) -> dict[str, Any]:
    replicas = int(deploy.spec.replicas if deploy.spec.replicas is not None else 1)
    return {
        "status": {
            "observedGeneration": deploy.metadata.generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": "ReplicaSet has successfully progressed.",
                },
            ],
        }
    }


def run_operator(
    stack: Stack, results: Results, *, syncs: int, profiler: Profiler | None = None
) -> None:
    kube = stack.kube
    kube.kubectl("apply", "-f", str(live.SYNC_CRD))
    kube.kubectl(
        "wait",
        "--for=condition=Established",
        f"crd/{api.PLURAL}.{api.GROUP}",
        "--timeout=60s",
    )
    live.install_operator_rbac(kube)
    kubeconfig = live.operator_identity(kube, name="bench-operator")
    live.create_namespace(kube, NAMESPACE)
    live.apply(
        kube,
        live.secret("bench-src", username="u", password="p"),
        live.secret("bench-tgt", username="u", password="p"),
        namespace=NAMESPACE,
    )
    apps, custom = _clients(kube.kubeconfig)
    operator = live.OperatorProcess(kube, name="bench", kubeconfig=kubeconfig)
    operator.start()
    assert operator.server.proc is not None
    pid = operator.server.proc.pid
    time.sleep(2.0)
    idle_mem = memory(pid)
    rss = Sampler(lambda: memory(pid).rss_mib, interval_s=0.5).start()
    if profiler is not None:
        profiler.start(operator.server, label="operator")
    manifests = [
        {
            **live.sync_manifest(f"s{i:03d}", source_secret="bench-src", target_secret="bench-tgt"),
        }
        for i in range(syncs)
    ]
    patched: set[str] = set()
    patch_seconds = 0.0
    t_children = t_ready = None
    try:
        log(f"operator: applying {syncs} AirflowAssetSync objects")
        t0 = time.monotonic()
        kube.kubectl(
            "apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(manifests), timeout_s=300
        )
        t_applied = time.monotonic()
        ready = 0
        while time.monotonic() - t0 < TIMEOUT_S:
            deployments = apps.list_namespaced_deployment(
                NAMESPACE, label_selector=f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
            ).items
            for deploy in deployments:
                name = deploy.metadata.name
                if name in patched:
                    continue
                t_patch = time.monotonic()
                apps.patch_namespaced_deployment_status(name, NAMESPACE, _rollout_status(deploy))
                patch_seconds += time.monotonic() - t_patch
                patched.add(name)
            if t_children is None and len(deployments) >= syncs:
                t_children = time.monotonic()
            objects = custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, NAMESPACE, api.PLURAL
            )["items"]
            ready = sum(
                1 for obj in objects if (live.condition(obj, "Ready") or {}).get("status") == "True"
            )
            if ready >= syncs:
                t_ready = time.monotonic()
                break
            time.sleep(0.5)
        # A little longer, so the RSS figure includes the state after the burst settles.
        time.sleep(5.0)
        mem = memory(pid)
    finally:
        if profiler is not None:
            profiler.stop()
        rss.stop()
        operator.stop()

    figures = {
        "syncs": syncs,
        "apply_s": round(t_applied - t0, 2),
        "all_deployments_s": round(t_children - t0, 2) if t_children else None,
        "all_ready_s": round(t_ready - t0, 2) if t_ready else None,
        "ready_count": ready,
        "harness_status_patches": len(patched),
        "harness_patch_seconds": round(patch_seconds, 2),
        "operator_rss_idle_mib": round(idle_mem.rss_mib, 1),
        "operator_rss_mib": round(mem.rss_mib, 1),
        "operator_hwm_mib": round(mem.hwm_mib, 1),
        "operator_sampled_peak_rss_mib": round(max((v for _, v in rss.series), default=0.0), 1),
        "operator_processes": mem.processes,
    }
    results.record("operator", **figures)
    results.series["operator_rss"] = [(t - t0, v) for t, v in rss.series]
    log(
        f"operator: {ready}/{syncs} Ready after "
        f"{figures['all_ready_s']}s (apply {figures['apply_s']}s); RSS peak {mem.hwm_mib:.0f} MiB"
    )
    results.check(
        "operator",
        f"{syncs} syncs Ready after one apply",
        figures["all_ready_s"],
        unit="s",
        target=f"<= {READY_TARGET_S:.0f} s (200 objects)",
        passed=t_ready is not None and (t_ready - t0) <= READY_TARGET_S,
        note=f"all Deployments after {figures['all_deployments_s']}s; "
        f"the bench's status patches took {figures['harness_patch_seconds']}s",
    )
    results.check(
        "operator",
        f"Operator peak RSS with {syncs} syncs (VmHWM)",
        figures["operator_hwm_mib"],
        unit="MiB",
        target=f"<= {RSS_TARGET_MIB:.0f} MiB",
        passed=mem.hwm_mib <= RSS_TARGET_MIB,
        note=f"{figures['operator_rss_idle_mib']} MiB with no objects",
    )
