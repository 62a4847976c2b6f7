"""The one in-process stand-in for a worker pod, for the few tests where speed matters more
than a kubelet: the fault tests that restart the API server or kill the operator dozens of
times under a 2,000-event stream (`tests/reliability/test_cluster_faults.py`).

Every other test that needs a worker runs it in a real pod on the real cluster
(`rig.cluster`, `tests/cluster/`). `LocalPod` starts the worker Deployment's container command
as a local process with exactly the env the Deployment declares (secretKeyRef values read
from the Secrets), authenticated as the pod's ServiceAccount, so the worker's Role is what
lets it read its sync and patch its status. `converge()` replaces the process when the
Deployment's pod template changes (Recreate: the old pod stops before the new one starts).
"""

from __future__ import annotations

import base64
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from airflow_asset_sync.resources import naming
from rig.cache import ROOT
from rig.kube import KubeRig
from rig.procs import Server, free_port
from support import live


def container_env(kube: KubeRig, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    """The env a kubelet would give the container (Secret values resolved)."""
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
    """The worker Deployment's pod as a local process; the test is its kubelet."""

    def __init__(self, kube: KubeRig, namespace: str, name: str, workdir: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.deployment_name = naming.worker_name(name)
        self.workdir = workdir
        self.port = free_port()
        self.template: dict[str, Any] | None = None
        self.server: Server | None = None
        self.starts = 0

    # -- what the kubelet sees ------------------------------------------------------------

    def deployment(self) -> dict[str, Any]:
        deploy = live.get(self.kube, "deployment", self.deployment_name, self.namespace)
        assert deploy is not None, f"deployment {self.namespace}/{self.deployment_name} missing"
        return deploy

    def _server(self, template: dict[str, Any]) -> Server:
        pod = template["spec"]
        (container,) = pod["containers"]
        sa_kubeconfig = self.kube.mint_service_account(self.namespace, pod["serviceAccountName"])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AAS_", "KUBERNETES_"))}
        env.update(container_env(self.kube, self.namespace, container))
        env.update(
            KUBECONFIG=str(sa_kubeconfig),
            PYTHONPATH=str(ROOT / "operator"),
            PYTHONUNBUFFERED="1",
        )
        # The image's entrypoint is `airflow-asset-sync`; only the port is moved off 8080,
        # since every "pod" here shares the loopback interface.
        argv = [*container.get("command", []), *container["args"], "--metrics-port", str(self.port)]
        return Server(
            f"worker-pod-{self.namespace}",
            [sys.executable, "-m", "airflow_asset_sync", *argv],
            log_path=self.workdir / "worker-pod.log",
            env=env,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, *, wait_ready: bool = True) -> None:
        self.template = self.deployment()["spec"]["template"]
        self.server = self._server(self.template)
        self.server.start()
        self.starts += 1
        if wait_ready:
            self.server.wait_ready(self.ready, timeout_s=120, what="ready")

    def ready(self) -> bool:
        return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def stop(self, *, timeout_s: float = 40.0) -> int | None:
        """SIGTERM and wait, as the kubelet does within the grace period; the exit code."""
        if self.server is None or self.server.proc is None:
            return None
        self.server.stop(timeout_s=timeout_s)
        return self.server.proc.returncode

    def kill(self) -> None:
        assert self.server is not None and self.server.proc is not None
        self.server.kill(signal.SIGKILL)
        self.server.proc.wait(timeout=10)

    def converge(self) -> bool:
        """Roll the pod if the Deployment's template changed (Recreate); True if it did."""
        template = self.deployment()["spec"]["template"]
        if template == self.template and self.running:
            return False
        code = self.stop()
        assert code in (0, None, -signal.SIGKILL), f"worker exited {code}:\n{self.log_tail()}"
        self.start()
        return True

    # -- readings ---------------------------------------------------------------------------

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` with these labels; 0 while the pod starts."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, rest = key.partition("{")
            if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def log(self) -> str:
        path = self.workdir / "worker-pod.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self) -> str:
        return self.server.log_tail() if self.server is not None else "(never started)"
