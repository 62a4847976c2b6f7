"""(5) The operator with many AirflowAssetSync objects: Ready, RSS, idle cost, a rollout to all.

The operator runs as a real process (`support.live.OperatorProcess`, under exactly
its chart's RBAC, cluster-wide) against the rig's kube-apiserver. For each size in
`operator_syncs` (a fresh operator and namespace each), the objects are applied in one
`kubectl apply --server-side`, the way Flux (and Argo CD with `ServerSideApply=true`) lands
them: one request per object, where client-side apply makes a GET and a POST. The bench
reports:

- time until all are Ready, and the operator's RSS (VmHWM: the peak, burst included);
- for the largest size, `operator_idle_s` of idle resyncs: RSS at its start and end, and the
  API server's requests (its own `apiserver_request_total`, for the resources the operator
  uses) per minute and per sync per resync interval;
- then a change that touches every sync, a new worker image in the operator's configuration
  (the operator restarted with another `AAS_WORKER_IMAGE`): time until every Deployment
  carries it, and the request rate meanwhile.

The Python, kopf and kubernetes versions and the machine's load are reported beside them.

A bare API server has no Deployment controller and no kubelet, so the bench plays the
Deployment controller: a Deployment whose generation its status has not observed gets the
status of a finished rollout (one request each, timed and reported, and left out of the
operator's request counts), from `DEPLOYMENT_WORKERS` threads: kube-controller-manager's
`--concurrent-deployment-syncs` default. One thread had made the bench's own 1,000 patches
(40 s of them) the slowest part of "Ready". "Ready" therefore measures the operator's work
plus an instant rollout; in a cluster the pods' start-up comes on top.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.resources import naming
from bench.common import Results, Sampler, cpu_seconds, log, memory
from bench.profiling import Profiler
from bench.stack import Stack
from rig.kube import KubeRig
from support import live

READY_TARGET_S = 60.0
RSS_TARGET_MIB = 200.0
ROLLOUT_TARGET_S = 120.0
#: The idle RSS may move this much over the idle window (issue: within 5 %).
FLAT_RSS_RATIO = 0.05
#: Resync interval of the bench's operator (the product's default).
RESYNC_S = 60.0
NAMESPACE = "bench"
TIMEOUT_S = 300.0
#: `kubectl apply --server-side`'s request per object (left out of the operator's count like
#: the bench's own; the operator itself never applies a sync, kopf patches it).
KUBECTL_APPLY = "APPLY airflowassetsyncs"
#: kube-controller-manager's default `--concurrent-deployment-syncs`.
DEPLOYMENT_WORKERS = 5
#: The resources the operator reads or writes: the API server's other traffic (its own
#: leases and endpoints, the bench's /metrics reads) is left out of the counts.
OPERATOR_RESOURCES = frozenset(
    {
        "airflowassetsyncs",
        "airflowassetsyncs/status",
        "secrets",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "deployments",
        "events",
    }
)


def clients(kubeconfig: Path) -> tuple[Any, Any]:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    api_client = k8s.ApiClient(configuration)
    return k8s.AppsV1Api(api_client), k8s.CustomObjectsApi(api_client)


def _rollout_status(deploy: dict[str, Any]) -> dict[str, Any]:
    replicas = int(deploy["spec"].get("replicas", 1))
    return {
        "status": {
            "observedGeneration": deploy["metadata"]["generation"],
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


def prepare(kube: KubeRig, namespace: str = NAMESPACE) -> Path:
    """The CRD, the chart's RBAC, the namespace and its Secrets; the operator's kubeconfig."""
    kube.kubectl("apply", "-f", str(live.SYNC_CRD))
    kube.kubectl(
        "wait",
        "--for=condition=Established",
        f"crd/{api.PLURAL}.{api.GROUP}",
        "--timeout=60s",
    )
    live.install_operator_rbac(kube)
    kubeconfig = live.operator_identity(kube, name="bench-operator")
    live.create_namespace(kube, namespace)
    live.apply(
        kube,
        live.secret("bench-src", username="u", password="p"),
        live.secret("bench-tgt", username="u", password="p"),
        namespace=namespace,
    )
    return kubeconfig


@dataclass
class Convergence:
    """How one `kubectl apply` of `syncs` objects converged (monotonic times)."""

    syncs: int
    t0: float
    t_applied: float
    t_children: float | None = None
    t_ready: float | None = None
    ready: int = 0
    patches: int = 0
    patch_seconds: float = 0.0
    lists: int = 0


@dataclass
class Harness:
    """The bench's own requests: the Deployment controller it plays, and its polling."""

    apps: Any
    custom: Any
    namespace: str = NAMESPACE
    patches: int = 0
    patch_seconds: float = 0.0
    lists: int = 0
    #: Deployments whose rollout the bench finished, by name: the generation it observed.
    observed: dict[str, int] = field(default_factory=dict)

    def deployments(self) -> list[dict[str, Any]]:
        # Raw JSON, not the client's models: building 1,000 V1Deployment objects twice a
        # second took the bench a core's worth of CPU, next to the operator it measures.
        self.lists += 1
        items: list[dict[str, Any]] = json.loads(
            self.apps.list_namespaced_deployment(
                self.namespace,
                label_selector=f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}",
                _preload_content=False,
            ).data
        )["items"]
        return items

    def finish_rollouts(self, deployments: Sequence[dict[str, Any]]) -> None:
        """Give every Deployment with an unobserved generation a finished rollout's status,
        `DEPLOYMENT_WORKERS` at a time (`patch_seconds` is the wall time of those rounds)."""
        due = [
            deploy
            for deploy in deployments
            if self.observed.get(deploy["metadata"]["name"])
            != int(deploy["metadata"].get("generation") or 0)
        ]
        if not due:
            return
        t_patch = time.monotonic()
        with ThreadPoolExecutor(max_workers=DEPLOYMENT_WORKERS) as pool:
            list(pool.map(self._finish, due))
        self.patch_seconds += time.monotonic() - t_patch
        self.patches += len(due)
        for deploy in due:
            self.observed[deploy["metadata"]["name"]] = int(
                deploy["metadata"].get("generation") or 0
            )

    def _finish(self, deploy: dict[str, Any]) -> None:
        self.apps.patch_namespaced_deployment_status(
            deploy["metadata"]["name"],
            self.namespace,
            _rollout_status(deploy),
            _preload_content=False,
        )

    def ready_count(self) -> int:
        self.lists += 1
        objects = json.loads(
            self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, api.PLURAL, _preload_content=False
            ).data
        )["items"]
        return sum(
            1 for obj in objects if (live.condition(obj, "Ready") or {}).get("status") == "True"
        )


def apply_and_converge(kube: KubeRig, harness: Harness, *, syncs: int) -> Convergence:
    """Apply `syncs` objects in one `kubectl apply --server-side` and wait until all are
    Ready."""
    manifests = [
        live.sync_manifest(f"s{i:04d}", source_secret="bench-src", target_secret="bench-tgt")
        for i in range(syncs)
    ]
    log(f"operator: applying {syncs} AirflowAssetSync objects")
    t0 = time.monotonic()
    kube.kubectl(
        "apply",
        "--server-side",
        "--field-manager=bench-gitops",
        "-n",
        harness.namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(manifests),
        timeout_s=600,
    )
    seen = Convergence(syncs=syncs, t0=t0, t_applied=time.monotonic())
    while time.monotonic() - t0 < TIMEOUT_S:
        deployments = harness.deployments()
        harness.finish_rollouts(deployments)
        if len(deployments) >= syncs and seen.t_children is None:
            seen.t_children = time.monotonic()
        seen.ready = harness.ready_count()
        if seen.ready >= syncs:
            seen.t_ready = time.monotonic()
            break
        time.sleep(0.5)
    seen.patches, seen.patch_seconds, seen.lists = (
        harness.patches,
        harness.patch_seconds,
        harness.lists,
    )
    return seen


# -- the API server's request counts -----------------------------------------------------------


def api_requests(kube: KubeRig) -> dict[tuple[str, str, str], float]:
    """`apiserver_request_total` by (verb, resource[/subresource], code), read from the
    server."""
    counts: dict[tuple[str, str, str], float] = defaultdict(float)
    for line in kube.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
        resource = labels.get("resource", "").strip('"')
        sub = labels.get("subresource", "").strip('"')
        verb = labels.get("verb", "").strip('"')
        code = labels.get("code", "").strip('"')
        counts[(verb, f"{resource}/{sub}" if sub else resource, code)] += float(value)
    return counts


def requests_between(
    before: dict[tuple[str, str, str], float],
    after: dict[tuple[str, str, str], float],
    *,
    code: str | None = None,
) -> dict[str, int]:
    """Requests to the operator's resources between two readings, by "VERB resource"
    (only those answered with `code`, if given)."""
    grown: dict[str, int] = defaultdict(int)
    for key, count in after.items():
        verb, resource, answered = key
        if resource in OPERATOR_RESOURCES and code in (None, answered):
            grown[f"{verb} {resource}"] += int(count - before.get(key, 0.0))
    return {k: v for k, v in sorted(grown.items(), key=lambda kv: -kv[1]) if v > 0}


def _operator_requests(counts: dict[str, int], harness_requests: int) -> int:
    """The operator's share: all requests to its resources but the bench's own (its lists
    and kubectl's applies; its Deployment status patches are to `deployments/status`, which
    is not one of the operator's resources and so never in `counts`)."""
    return max(sum(counts.values()) - harness_requests, 0)


def versions() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "kopf": metadata.version("kopf"),
        "kubernetes": metadata.version("kubernetes"),
        "cpus": os.cpu_count(),
    }


# -- the section -----------------------------------------------------------------------------


def run_operator(
    stack: Stack,
    results: Results,
    *,
    syncs: Sequence[int],
    idle_s: float,
    profiler: Profiler | None = None,
) -> None:
    kube = stack.kube
    results.record("operator", versions=versions())
    largest = max(syncs)
    for count in syncs:
        _run_size(
            kube,
            results,
            syncs=count,
            idle_s=idle_s if count == largest else 0.0,
            rollout=count == largest,
            profiler=profiler if count == largest else None,
        )


def _run_size(
    kube: KubeRig,
    results: Results,
    *,
    syncs: int,
    idle_s: float,
    rollout: bool,
    profiler: Profiler | None,
) -> None:
    namespace = f"{NAMESPACE}-{syncs}"
    kubeconfig = prepare(kube, namespace)
    apps, custom = clients(kube.kubeconfig)
    harness = Harness(apps=apps, custom=custom, namespace=namespace)
    env = {"AAS_RESYNC_SECONDS": str(RESYNC_S)}
    operator = live.OperatorProcess(kube, name=f"bench-{syncs}", kubeconfig=kubeconfig, env=env)
    operator.start()
    assert operator.server.proc is not None
    pid = operator.server.proc.pid
    time.sleep(2.0)
    idle_mem = memory(pid)
    load_before = os.getloadavg()
    rss = Sampler(lambda: memory(pid).rss_mib, interval_s=0.5).start()
    if profiler is not None:
        profiler.start(operator.server, label="operator")
    figures: dict[str, Any] = {"syncs": syncs}
    seen: Convergence | None = None
    try:
        counted = api_requests(kube)
        cpu_before = cpu_seconds(pid)
        seen = apply_and_converge(kube, harness, syncs=syncs)
        burst_cpu_s = cpu_seconds(pid) - cpu_before
        after = api_requests(kube)
        burst = requests_between(counted, after)
        burst_conflicts = requests_between(counted, after, code="409")
        # A little longer, so the RSS figure includes the state after the burst settles.
        time.sleep(5.0)
        mem = memory(pid)
        figures.update(
            apply_s=round(seen.t_applied - seen.t0, 2),
            all_deployments_s=round(seen.t_children - seen.t0, 2) if seen.t_children else None,
            all_ready_s=round(seen.t_ready - seen.t0, 2) if seen.t_ready else None,
            ready_count=seen.ready,
            harness_status_patches=seen.patches,
            harness_patch_seconds=round(seen.patch_seconds, 2),
            operator_rss_idle_mib=round(idle_mem.rss_mib, 1),
            operator_rss_mib=round(mem.rss_mib, 1),
            operator_hwm_mib=round(mem.hwm_mib, 1),
            operator_mib_per_sync=round((mem.hwm_mib - idle_mem.rss_mib) / syncs, 3),
            burst_requests=burst,
            burst_conflicts=burst_conflicts,
            # Against the wall time to Ready: near 1.0 means the operator's one interpreter
            # (the GIL) is the limit, well below it means the API server or the machine is.
            burst_operator_cpu_s=round(burst_cpu_s, 1),
            burst_operator_requests_per_sync=round(
                _operator_requests(burst, seen.lists + burst.get(KUBECTL_APPLY, 0)) / syncs,
                1,
            ),
            load_before=[round(v, 2) for v in load_before],
            load_after=[round(v, 2) for v in os.getloadavg()],
        )
        if idle_s > 0:
            figures["idle"] = _idle(kube, pid, harness, idle_s=idle_s, syncs=syncs)
        if rollout:
            operator.stop()
            figures["rollout"] = _new_image_for_all(
                kube, harness, kubeconfig=kubeconfig, env=env, syncs=syncs, namespace=namespace
            )
    finally:
        if profiler is not None:
            profiler.stop()
        rss.stop()
        operator.stop()
        # Recorded before the clean-up: deleting 1,000 syncs once outlived a timeout, and
        # took 36 minutes of figures with it.
        results.record("operator", **{f"at_{syncs}": figures})
        t0 = seen.t0 if seen is not None else 0.0
        results.series[f"operator_rss_{syncs}"] = [(t - t0, v) for t, v in rss.series]
        _clean(kube, namespace)
    _checks(results, figures)


def _idle(
    kube: KubeRig, pid: int, harness: Harness, *, idle_s: float, syncs: int
) -> dict[str, Any]:
    """`idle_s` of nothing but resyncs: RSS and the API server's requests."""
    log(f"operator: {syncs} syncs idle for {idle_s / 60:.0f} min")
    start_mem = memory(pid)
    counted = api_requests(kube)
    samples = Sampler(lambda: memory(pid).rss_mib, interval_s=5.0).start()
    t0 = time.monotonic()
    time.sleep(idle_s)
    samples.stop()
    elapsed = time.monotonic() - t0
    counts = requests_between(counted, api_requests(kube))
    end_mem = memory(pid)
    operator_requests = _operator_requests(counts, 0)
    per_minute = operator_requests / (elapsed / 60)
    return {
        "window_s": round(elapsed, 1),
        "rss_start_mib": round(start_mem.rss_mib, 1),
        "rss_end_mib": round(end_mem.rss_mib, 1),
        "rss_max_mib": round(max((v for _, v in samples.series), default=0.0), 1),
        "rss_drift_ratio": round((end_mem.rss_mib - start_mem.rss_mib) / start_mem.rss_mib, 4),
        "requests": counts,
        "requests_per_min": round(per_minute, 1),
        "requests_per_sync_per_resync": round(per_minute * (RESYNC_S / 60) / syncs, 3),
    }


def _new_image_for_all(
    kube: KubeRig,
    harness: Harness,
    *,
    kubeconfig: Path,
    env: dict[str, str],
    syncs: int,
    namespace: str,
) -> dict[str, Any]:
    """Restart the operator with another worker image; time until every Deployment has it
    (and until every sync is Ready again, the bench finishing each rollout)."""
    image = f"{live.WORKER_IMAGE}-next"
    log(f"operator: new worker image for all {syncs} syncs")
    counted = api_requests(kube)
    harness.patches = harness.lists = 0
    operator = live.OperatorProcess(
        kube,
        name=f"bench-{syncs}-next",
        kubeconfig=kubeconfig,
        env={**env, "AAS_WORKER_IMAGE": image},
    )
    t0 = time.monotonic()
    operator.start()
    t_images = t_ready = None
    try:
        while time.monotonic() - t0 < TIMEOUT_S:
            deployments = harness.deployments()
            harness.finish_rollouts(deployments)
            updated = sum(
                1
                for d in deployments
                if d["spec"]["template"]["spec"]["containers"][0]["image"] == image
            )
            if t_images is None and updated >= syncs:
                t_images = time.monotonic()
            if t_images is not None and harness.ready_count() >= syncs:
                t_ready = time.monotonic()
                break
            time.sleep(0.5)
        elapsed = (t_images or time.monotonic()) - t0
        after = api_requests(kube)
        counts = requests_between(counted, after)
        conflicts = requests_between(counted, after, code="409")
    finally:
        operator.stop()
    operator_requests = _operator_requests(counts, harness.lists)
    return {
        "all_updated_s": round(t_images - t0, 2) if t_images else None,
        "all_ready_again_s": round(t_ready - t0, 2) if t_ready else None,
        "requests": counts,
        "conflicts": conflicts,
        "operator_requests": operator_requests,
        "operator_requests_per_s": round(operator_requests / max(elapsed, 1e-9), 1),
        "harness_requests": harness.lists,
        "harness_status_patches": harness.patches,
    }


def _clean(kube: KubeRig, namespace: str) -> None:
    """Delete the syncs and their children (a bare API server has no garbage collector)."""
    kube.kubectl(
        "delete", "aas", "--all", "-n", namespace, "--wait=false", check=False, timeout_s=600
    )
    kube.kubectl(
        "delete",
        "deployments,serviceaccounts,roles,rolebindings,services",
        "-l",
        f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}",
        "-n",
        namespace,
        "--wait=false",
        check=False,
        timeout_s=600,
    )


def _checks(results: Results, figures: dict[str, Any]) -> None:
    syncs = figures["syncs"]
    ready_s = figures.get("all_ready_s")
    results.check(
        "operator",
        f"{syncs} syncs Ready after one apply",
        ready_s,
        unit="s",
        target=f"<= {READY_TARGET_S:.0f} s",
        passed=ready_s is not None and ready_s <= READY_TARGET_S,
        note=f"kubectl apply {figures.get('apply_s')} s; all Deployments after "
        f"{figures.get('all_deployments_s')} s; "
        f"{figures.get('burst_operator_requests_per_sync')} operator requests per sync",
    )
    hwm = figures.get("operator_hwm_mib")
    results.check(
        "operator",
        f"Operator peak RSS with {syncs} syncs (VmHWM)",
        hwm,
        unit="MiB",
        target=f"<= {RSS_TARGET_MIB:.0f} MiB",
        passed=hwm is not None and hwm <= RSS_TARGET_MIB,
        note=f"{figures.get('operator_rss_idle_mib')} MiB with no objects; "
        f"{figures.get('operator_mib_per_sync')} MiB per sync",
    )
    idle = figures.get("idle")
    if idle is not None:
        results.check(
            "operator",
            f"RSS drift over {idle['window_s'] / 60:.0f} min idle ({syncs} syncs)",
            idle["rss_drift_ratio"],
            unit="ratio",
            target=f"within {FLAT_RSS_RATIO:.0%}",
            passed=abs(idle["rss_drift_ratio"]) <= FLAT_RSS_RATIO,
            note=f"{idle['rss_start_mib']} -> {idle['rss_end_mib']} MiB (max "
            f"{idle['rss_max_mib']})",
        )
        results.check(
            "operator",
            f"Idle API requests per sync per resync interval ({syncs} syncs)",
            idle["requests_per_sync_per_resync"],
            unit="requests",
            target="< 1",
            passed=idle["requests_per_sync_per_resync"] < 1,
            note=f"{idle['requests_per_min']} requests/min in all",
        )
    rollout = figures.get("rollout")
    if rollout is not None:
        updated_s = rollout["all_updated_s"]
        results.check(
            "operator",
            f"New worker image on all {syncs} Deployments",
            updated_s,
            unit="s",
            target=f"<= {ROLLOUT_TARGET_S:.0f} s",
            passed=updated_s is not None and updated_s <= ROLLOUT_TARGET_S,
            note=f"{rollout['operator_requests_per_s']} operator requests/s; all Ready again "
            f"after {rollout['all_ready_again_s']} s",
        )
