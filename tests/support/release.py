"""A chart release installed into the rig, and its operator run as the chart would run it.

The rig runs no pods, so the test plays the kubelet for the operator's Deployment: it starts
`python -m airflow_asset_sync <the container's args>` with the container's env, and with the
credentials of the chart's ServiceAccount (a client certificate for
`system:serviceaccount:<ns>:<sa>`). Whatever that process can do, the chart's RBAC allows.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.kube import KubeRig
from rig.procs import free_port
from support import chart, live
from support.packaging_tools import CHART


@dataclass(frozen=True)
class Release:
    kube: KubeRig
    name: str
    namespace: str

    @property
    def deployment(self) -> dict[str, Any]:
        deploy = live.get(
            self.kube, "deployment", f"{self.name}-airflow-asset-sync", self.namespace
        )
        assert deploy is not None, f"the chart made no Deployment in {self.namespace}"
        return deploy

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return dict(container)

    @property
    def service_account(self) -> str:
        return str(self.deployment["spec"]["template"]["spec"]["serviceAccountName"])

    @property
    def user(self) -> str:
        """The ServiceAccount's user name, as RBAC and `kubectl --as` know it."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def can(self, verb: str, resource: str, namespace: str | None = None, *extra: str) -> bool:
        """`kubectl auth can-i` for the chart's ServiceAccount."""
        scope = ["-n", namespace] if namespace else ["--all-namespaces"]
        result = self.kube.kubectl(
            "auth", "can-i", verb, resource, *scope, *extra, f"--as={self.user}", check=False
        )
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"

    def uninstall(self) -> None:
        chart.helm(
            "uninstall", self.name, "-n", self.namespace, "--wait", kubeconfig=self.kube.kubeconfig
        )


def install(
    kube: KubeRig,
    name: str,
    namespace: str,
    *,
    values: Sequence[Path] = (),
    sets: Mapping[str, str] | None = None,
) -> Release:
    """`helm install` from the repository path, as the README says (no --wait: no pods here)."""
    args = ["install", name, str(CHART), "--namespace", namespace, "--create-namespace"]
    for path in values:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    chart.helm(*args, kubeconfig=kube.kubeconfig)
    return Release(kube=kube, name=name, namespace=namespace)


def _with_port(args: Sequence[str], flag: str, port: int) -> list[str]:
    out = [re.sub(rf"^{flag}=\d+$", f"{flag}={port}", arg) for arg in args]
    assert f"{flag}={port}" in out, f"{flag} missing from the chart's args {list(args)}"
    return out


def operator_process(release: Release, *, name: str) -> live.OperatorProcess:
    """The release's operator as a local process, as its pod would run it.

    Args and env are the Deployment's, except two ports: the chart's fixed ports become free
    ones (other processes on this machine may hold 8080/9090).
    """
    container = release.container
    env = {e["name"]: e["value"] for e in container.get("env") or () if "value" in e}
    kubeconfig = release.kube.mint_service_account(release.namespace, release.service_account)
    proc = live.OperatorProcess(release.kube, name=name, kubeconfig=kubeconfig, env=env)
    # OperatorProcess runs `... operator <args> --liveness-port P --metrics-port 0`; the chart
    # puts global flags before the subcommand, so run the container's args verbatim instead.
    args = _with_port(container["args"], "--liveness-port", proc.liveness_port)
    args = _with_port(args, "--metrics-port", free_port())
    proc.server.argv = [sys.executable, "-m", "airflow_asset_sync", *args]
    return proc


def describe(kube: KubeRig, kind: str, name: str, namespace: str) -> str:
    obj = live.get(kube, kind, name, namespace)
    return json.dumps(obj, indent=1)[:4000] if obj else f"{kind} {namespace}/{name} not found"
