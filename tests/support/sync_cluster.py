"""The product's cluster path on the rig: CR -> operator -> worker "pod" -> status.

The rig's API server runs no kubelet and no controllers, so the test plays both for our own
objects, and only for them:

- `rig.localpod.LocalPod` is the kubelet for the worker Deployment the operator made (the
  suite's one in-process stand-in for a pod; every other worker runs on the real cluster).
- `live.act_as_deployment_controller` writes the Deployment's status, so Ready can turn True.

`SyncCluster` sets one sync up: a namespace, the operator as a real process under an identity
holding exactly `rbac.operator_rules()`, the Secrets and the AirflowAssetSync from
`rig.sync.sync_manifests`, and the worker pod.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_asset_sync.api import spec as api
from rig.kube import KubeRig
from rig.localpod import LocalPod
from support import live

SYNC_KIND = f"{api.PLURAL}.{api.GROUP}"


class SyncCluster:
    """One sync on the rig's API server, with its operator and its worker pod."""

    def __init__(
        self,
        kube: KubeRig,
        *,
        namespace: str,
        manifests: list[dict[str, Any]],
        workdir: Path,
    ) -> None:
        self.kube = kube
        self.namespace = live.create_namespace(kube, namespace)
        self.manifests = manifests
        for doc in manifests:
            doc["metadata"]["namespace"] = self.namespace
        (sync,) = [d for d in manifests if d["kind"] == api.KIND]
        self.name: str = sync["metadata"]["name"]
        self.workdir = workdir
        self.operator = live.OperatorProcess(
            kube,
            name=f"rel-{namespace}",
            kubeconfig=live.operator_identity(
                kube, name=f"{namespace}-operator", namespaces=[self.namespace]
            ),
            args=("--standalone", "--namespace", self.namespace),
        )
        self.pod = LocalPod(kube, self.namespace, self.name, workdir)

    def start(self) -> SyncCluster:
        """Operator up, manifests applied, children made, worker pod ready, sync Ready."""
        self.operator.start()
        live.apply(self.kube, *self.manifests)
        live.wait_for(
            lambda: live.get(self.kube, "deployment", self.pod.deployment_name, self.namespace),
            what="the worker Deployment",
            timeout_s=60,
        )
        self.pod.start()
        self.wait_converged()
        return self

    def stop(self) -> None:
        """Stop the pod and the operator (the CR stays: a bare API server cannot GC it)."""
        self.pod.stop()
        if self.operator.running:
            self.operator.stop()

    def sync(self) -> dict[str, Any]:
        obj = live.get(self.kube, SYNC_KIND, self.name, self.namespace)
        assert obj is not None, f"{self.namespace}/{self.name} is gone"
        return obj

    def status(self) -> dict[str, Any]:
        return dict(self.sync().get("status") or {})

    def wait_converged(self, *, timeout_s: float = 90) -> dict[str, Any]:
        """The operator has handled the current generation: every child exists, the
        Deployment carries the current spec, and Ready is True once the Deployment reports
        the rolled pod available (the test writes that status, as the controller would)."""
        worker = self.pod.deployment_name

        def converged() -> dict[str, Any] | None:
            sync = self.sync()
            for kind in ("serviceaccount", "role", "rolebinding", "deployment"):
                assert live.get(self.kube, kind, worker, self.namespace), f"{kind} missing"
            status = sync.get("status") or {}
            assert status.get("observedGeneration") == sync["metadata"]["generation"], (
                f"observedGeneration {status.get('observedGeneration')} of "
                f"{sync['metadata']['generation']}"
            )
            self.pod.converge()
            live.act_as_deployment_controller(self.kube, self.namespace, worker, ready=True)
            ready = live.condition(self.sync(), "Ready")
            assert ready is not None and ready["status"] == "True", ready
            return sync

        return live.wait_for(
            converged,
            what=f"{self.namespace}/{self.name} converged (operator log {self.operator.log_path})",
            timeout_s=timeout_s,
            interval_s=0.5,
        )

    def patch_spec(self, patch: dict[str, Any]) -> None:
        import json

        self.kube.kubectl(
            "patch",
            SYNC_KIND,
            self.name,
            "-n",
            self.namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": patch}),
        )
