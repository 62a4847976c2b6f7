"""Helpers for tests against the rig's real kube-apiserver.

- `wait_for`: poll a probe until it returns something truthy, with a deadline (no bare sleeps);
- small helpers around `kubectl` (apply dicts, read objects and events, write a Deployment's
  status the way the Deployment controller would: the bare API server has none);
- `OperatorProcess`: the operator as a real process (`python -m airflow_asset_sync operator`),
  run as a rig `Server` in its own process group with its log in a file, under an identity
  that holds exactly the operator's RBAC rules (`rbac.operator_rules()`), not admin.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.clients import kube as kube_client
from airflow_asset_sync.resources import rbac
from rig.kube import KubeRig
from rig.procs import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
SYNC_CRD = CRDS / "airflowassetsync.yaml"
PEERING_CRDS = CRDS / "kopf-peering.yaml"

T = TypeVar("T")

#: The operator's identity in these tests, and the ClusterRole holding `operator_rules()`.
OPERATOR_ROLE = "airflow-asset-sync-operator"
WORKER_IMAGE = "registry.example/airflow-asset-sync:test"


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float = 30.0,
    interval_s: float = 0.2,
) -> T:
    """Call `probe` until it returns a truthy value (returned) or the deadline passes.

    A probe may also raise AssertionError to say "not yet" with a reason; the last reason (or
    the last value) is in the timeout message.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = probe()
        except AssertionError as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval_s)


# --- kubectl helpers ----------------------------------------------------------------------


def apply(kube: KubeRig, *objs: Mapping[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"]
    if namespace is not None:
        args += ["-n", namespace]
    kube.kubectl(*args, input=yaml.safe_dump_all([dict(o) for o in objs]))


def get_any(kube: KubeRig, *args: str) -> dict[str, Any]:
    """`kubectl get -o json ...` (an object or a list), typed for reading."""
    data: dict[str, Any] = json.loads(kube.kubectl("get", "-o", "json", *args).stdout)
    return data


def wait_established(kube: KubeRig, crd: str, *, timeout_s: float = 60) -> None:
    """Poll until a CRD is Established. (`kubectl wait` fails outright, instead of waiting,
    when it looks before the API server has written any condition.)"""

    def established() -> bool:
        conditions = (get_any(kube, "crd", crd).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(established, what=f"CRD {crd} established", timeout_s=timeout_s)


def create_namespace(kube: KubeRig, name: str) -> str:
    """Create a namespace (never deleted: a bare API server cannot finish deleting one)."""
    if kube.kubectl("get", "namespace", name, check=False).returncode != 0:
        kube.kubectl("create", "namespace", name)
    return name


def get(kube: KubeRig, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    result = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(f"kubectl get {kind} {name}: {result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def events_for(kube: KubeRig, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    """Core v1 events whose involvedObject is `kind/name`, oldest first."""
    data = get_any(
        kube,
        "events",
        "-n",
        namespace,
        f"--field-selector=involvedObject.kind={kind},involvedObject.name={name}",
    )
    items: list[dict[str, Any]] = list(data.get("items") or [])
    return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def act_as_deployment_controller(kube: KubeRig, namespace: str, name: str, *, ready: bool) -> None:
    """Write the Deployment's status as its controller would once the rollout is done.

    The bare API server runs no controllers; this is the only way a Deployment reports
    available replicas here. Done through the status subresource, as the controller does.
    """
    deploy = get(kube, "deployment", name, namespace)
    assert deploy is not None, f"deployment {namespace}/{name} missing"
    replicas = int(deploy["spec"].get("replicas", 1))
    available = replicas if ready else 0
    status = {
        "observedGeneration": deploy["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "availableReplicas": available,
        "unavailableReplicas": replicas - available,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if ready else "False",
                "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if ready
                else "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{name}-1" has successfully progressed.',
            },
        ],
    }
    kube.kubectl(
        "patch",
        "deployment",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def kube_client_for(kubeconfig: Path) -> kube_client.KubeClient:
    """The project's own API client (what the operator and the worker use) for an identity."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return kube_client.KubeClient(k8s.ApiClient(configuration))


# --- the operator's identity --------------------------------------------------------------


def install_operator_rbac(kube: KubeRig) -> None:
    """A ClusterRole with exactly `rbac.operator_rules()` (what the chart grants)."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": OPERATOR_ROLE},
        "rules": rbac.operator_rules(),
    }
    apply(kube, role)


def operator_identity(kube: KubeRig, *, name: str, namespaces: Sequence[str] | None = None) -> Path:
    """A kubeconfig for a ServiceAccount-like user bound to the operator's ClusterRole.

    Cluster-wide (a ClusterRoleBinding) unless `namespaces` is given: then one RoleBinding per
    namespace, which is what a namespace-scoped install grants.
    """
    namespace = "aas-system"
    create_namespace(kube, namespace)
    user = f"system:serviceaccount:{namespace}:{name}"
    subject = {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}
    role_ref = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OPERATOR_ROLE,
    }
    if namespaces:
        for ns in namespaces:
            apply(
                kube,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": ns},
                    "roleRef": role_ref,
                    "subjects": [subject],
                },
            )
    else:
        apply(
            kube,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": role_ref,
                "subjects": [subject],
            },
        )
    return kube.mint_service_account(namespace, name)


# --- the operator process -----------------------------------------------------------------


class OperatorProcess:
    """`python -m airflow_asset_sync operator ...` as a rig Server."""

    def __init__(
        self,
        kube: KubeRig,
        *,
        name: str,
        kubeconfig: Path,
        args: Sequence[str] = ("--standalone",),
        env: Mapping[str, str] | None = None,
        metrics_port: int = 0,
    ) -> None:
        self.kube = kube
        self.name = name
        self.liveness_port = free_port()
        #: The operator's /metrics port; 0 (the default) serves none.
        self.metrics_port = metrics_port
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AAS_", "KUBERNETES_"))
        }
        environment.update(
            KUBECONFIG=str(kubeconfig),
            PYTHONPATH=str(ROOT / "operator"),
            PYTHONUNBUFFERED="1",
            AAS_WORKER_IMAGE=WORKER_IMAGE,
            AAS_RESYNC_SECONDS="60",
            AAS_RETRY_BASE_SECONDS="1",
            AAS_RETRY_MAX_SECONDS="8",
        )
        environment.update(env or {})
        self.server = Server(
            f"operator-{name}",
            [
                sys.executable,
                "-m",
                "airflow_asset_sync",
                "operator",
                *args,
                "--liveness-port",
                str(self.liveness_port),
                "--metrics-port",
                str(metrics_port),
            ],
            log_path=kube.workdir / f"operator-{name}.log",
            env=environment,
            cwd=ROOT,
        )
        self._log_offset = 0

    def start(self) -> None:
        """Start and wait for kopf's liveness endpoint (the operator's loop is running)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.server.start()
        self.server.wait_ready(self._alive, timeout_s=60, what="serving /healthz")

    def _alive(self) -> bool:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no peering exit (an operator crash)."""
        self.server.kill(signal.SIGKILL)
        assert self.server.proc is not None
        self.server.proc.wait(timeout=10)
        self.server.stop()

    @property
    def running(self) -> bool:
        return self.server.running

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    def log(self) -> str:
        """This run's log (a restarted process appends to the same file)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_log(self, pattern: str, *, count: int = 1, timeout_s: float = 30.0) -> None:
        def probe() -> bool:
            if not self.running:
                raise AssertionError(f"operator {self.name} exited:\n{self.server.log_tail()}")
            return self.count(pattern) >= count

        wait_for(
            probe, what=f"{count}x {pattern!r} in operator {self.name}'s log", timeout_s=timeout_s
        )


def sync_manifest(
    name: str,
    *,
    source_secret: str | None = None,
    target_secret: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A small AirflowAssetSync, optionally with password auth from the given Secrets."""
    source: dict[str, Any] = {"url": "http://airflow-a:8080"}
    target: dict[str, Any] = {"name": "b", "url": "http://airflow-b:8080"}
    if source_secret:
        source["auth"] = {"password": {"secretName": source_secret}}
    if target_secret:
        target["auth"] = {"password": {"secretName": target_secret}}
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": {"source": source, "targets": [target], **spec},
    }


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": dict(data),
    }
