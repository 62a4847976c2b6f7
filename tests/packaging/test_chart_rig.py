"""The chart against the rig's real kube-apiserver 1.34.

- every ci/*-values.yaml render passes `kubectl apply --dry-run=server` (real schemas, real
  admission: the operator pod is checked against the restricted Pod Security Standard);
- `helm install` cluster-wide and namespace-scoped (separate releases and namespaces), then the
  operator runs with the chart's ServiceAccount's credentials and reconciles a sample to Ready:
  the chart's RBAC is enough; `kubectl auth can-i` shows it is no broader than that;
- a release with kopf peering: the operator joins the ClusterKopfPeering the chart created.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.resources import naming, rbac
from rig.kube import KubeRig
from support import chart, live, release
from support.live import condition, get, wait_for
from support.packaging_tools import CHART
from support.release import Release

pytestmark = pytest.mark.rig

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def namespace(kube: KubeRig, name: str) -> str:
    """A namespace enforcing the restricted Pod Security Standard (never deleted: a bare API
    server cannot finish deleting one)."""
    obj = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(obj))
    return name


# --- server-side dry runs -----------------------------------------------------------------


@pytest.mark.parametrize("values", chart.CI_VALUES, ids=lambda p: p.name.removesuffix(".yaml"))
def test_ci_values_pass_server_side_dry_run(monitoring_crds: KubeRig, values: Path) -> None:
    kube = monitoring_crds
    ns = namespace(kube, "pkg-dry")
    for watched in yaml.safe_load(values.read_text()).get("watchNamespaces") or ():
        namespace(kube, watched)
    rendered = chart.template_text(release="dry", namespace=ns, values=[values]).stdout
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert result.returncode == 0, result.stderr
    # PodSecurity admission warns (for Deployments) where it would reject a pod.
    assert "Warning" not in result.stderr, result.stderr
    kinds = {line.split("/", 1)[0] for line in result.stdout.split() if "/" in line}
    assert "deployment.apps" in kinds, result.stdout


def test_operator_pod_is_admitted_under_restricted_pod_security(chart_crds: KubeRig) -> None:
    """Enforced on pods, not Deployments: a Pod from the chart's template, dry-run."""
    ns = namespace(chart_crds, "pkg-dry")
    deploy = chart.find(chart.render(release="dry", namespace=ns), "Deployment")
    template = deploy["spec"]["template"]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dry-operator", "namespace": ns, **template["metadata"]},
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    result = chart_crds.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr

    # The check bites: the same pod running as root is rejected.
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    pod["spec"]["securityContext"]["runAsNonRoot"] = False
    rejected = chart_crds.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert rejected.returncode != 0
    assert "violates PodSecurity" in rejected.stderr


# --- installs and the operator under the chart's identity ---------------------------------


def _secrets_and_sync(kube: KubeRig, ns: str, name: str) -> dict[str, Any]:
    live.apply(
        kube,
        live.secret(f"{name}-a", username="u", password="p"),
        live.secret(f"{name}-b", username="u", password="p"),
        namespace=ns,
    )
    manifest = live.sync_manifest(name, source_secret=f"{name}-a", target_secret=f"{name}-b")
    live.apply(kube, manifest, namespace=ns)
    return manifest


class NotReconciled(Exception):
    """The operator reported a problem no wait will cure (e.g. 403 Forbidden from RBAC)."""


def assert_reconciles_to_ready(
    rel: Release, proc: live.OperatorProcess, ns: str, name: str
) -> None:
    """The operator (chart identity) builds the worker's objects and the sync turns Ready."""
    kube = rel.kube
    worker = naming.worker_name(name)

    def worker_deployment() -> dict[str, Any] | None:
        ready = condition(get(kube, api.PLURAL, name, ns), "Ready")
        if ready is not None and ready.get("reason") in ("KubernetesApiError", "InvalidSpec"):
            raise NotReconciled(f"{ns}/{name}: {ready['reason']}: {ready.get('message')}")
        return get(kube, "deployment", worker, ns)

    deploy = wait_for(
        worker_deployment,
        what=f"worker Deployment {ns}/{worker} (operator log: {proc.log_path})",
        timeout_s=60,
    )
    for kind in ("serviceaccount", "role", "rolebinding"):
        assert get(kube, kind, worker, ns) is not None, f"{kind} {worker} missing"
    role = get(kube, "role", worker, ns)
    assert role is not None
    assert role["rules"] == rbac.worker_rules(name)
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    expected_image = {e["name"]: e.get("value") for e in rel.container["env"]}["AAS_WORKER_IMAGE"]
    assert container["image"] == expected_image

    def reconciled() -> dict[str, Any] | None:
        obj = get(kube, api.PLURAL, name, ns)
        ready = condition(obj, "Ready")
        if obj is None or ready is None:
            return None
        assert obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        return obj

    obj = wait_for(reconciled, what=f"status conditions on {ns}/{name}", timeout_s=60)
    # No finalizer: the garbage collector deletes the children through owner references.
    assert not obj["metadata"].get("finalizers")

    live.act_as_deployment_controller(kube, ns, worker, ready=True)

    def ready() -> bool:
        cond = condition(get(kube, api.PLURAL, name, ns), "Ready")
        assert cond is not None and cond["status"] == "True", cond
        return True

    wait_for(ready, what=f"Ready=True on {ns}/{name}", timeout_s=60)
    assert "Not enough permissions" not in proc.log(), proc.log()
    assert "Forbidden" not in proc.log(), proc.log()


def delete_sync(kube: KubeRig, ns: str, name: str) -> None:
    """Deleted at once (no finalizer); the worker Deployment is owned by it, so a cluster's
    garbage collector removes it (this API server has none: the reference is what counts)."""
    obj = get(kube, api.PLURAL, name, ns)
    assert obj is not None
    uid = obj["metadata"]["uid"]
    kube.kubectl("delete", api.PLURAL, name, "-n", ns, "--timeout=60s")
    assert get(kube, api.PLURAL, name, ns) is None
    worker = get(kube, "deployment", naming.worker_name(name), ns)
    assert worker is not None
    (owner,) = worker["metadata"]["ownerReferences"]
    assert owner["uid"] == uid and owner["blockOwnerDeletion"] is True


def leave_no_finalizers(kube: KubeRig, ns: str) -> None:
    """After a failure: delete the namespace's syncs while the operator still runs, so no
    object with our finalizer is left for later tests' operators to trip over."""
    kube.kubectl("delete", api.PLURAL, "--all", "-n", ns, "--timeout=30s", check=False)


@pytest.fixture(scope="module")
def clusterwide(chart_crds: KubeRig) -> Iterator[Release]:
    rel = release.install(chart_crds, "cw", namespace(chart_crds, "pkg-cw"))
    try:
        yield rel
    finally:
        rel.uninstall()


@pytest.fixture(scope="module")
def namespaced(chart_crds: KubeRig) -> Iterator[Release]:
    for ns in ("pkg-ns-a", "pkg-ns-b", "pkg-ns-x"):
        namespace(chart_crds, ns)
    rel = release.install(
        chart_crds,
        "nsd",
        namespace(chart_crds, "pkg-nsd"),
        sets={"watchNamespaces": "{pkg-ns-a,pkg-ns-b}"},
    )
    try:
        yield rel
    finally:
        rel.uninstall()


def test_clusterwide_release_runs_the_operator(clusterwide: Release) -> None:
    rel, kube = clusterwide, clusterwide.kube
    args = rel.container["args"]
    assert "--all-namespaces" in args
    assert "--standalone" in args
    ns = namespace(kube, "pkg-cw-apps")
    proc = release.operator_process(rel, name="chart-cw")
    proc.start()
    try:
        _secrets_and_sync(kube, ns, "cw-sample")
        assert_reconciles_to_ready(rel, proc, ns, "cw-sample")
        delete_sync(kube, ns, "cw-sample")
    finally:
        leave_no_finalizers(kube, ns)
        proc.stop()


def test_clusterwide_release_grants_no_more_than_needed(clusterwide: Release) -> None:
    rel = clusterwide
    ns = "pkg-cw-apps"
    # What the operator does, anywhere.
    assert rel.can("create", "deployments.apps", ns)
    assert rel.can("create", "roles.rbac.authorization.k8s.io", ns)
    assert rel.can("get", "secrets", ns)
    assert rel.can(
        "patch", "airflowassetsyncs.airflow-asset-sync.github.io", ns, "--subresource=status"
    )
    assert rel.can("patch", "clusterkopfpeerings.kopf.dev")
    assert rel.can("list", "customresourcedefinitions.apiextensions.k8s.io")
    # And not more.
    denied = [
        ("create", "pods", ns, ()),
        ("create", "pods", ns, ("--subresource=exec",)),
        ("list", "secrets", ns, ()),
        ("watch", "secrets", ns, ()),
        ("create", "secrets", ns, ()),
        ("update", "secrets", ns, ()),
        ("create", "serviceaccounts", ns, ("--subresource=token",)),
        ("update", "deployments.apps", ns, ()),
        ("escalate", "roles.rbac.authorization.k8s.io", ns, ()),
        ("bind", "roles.rbac.authorization.k8s.io", ns, ()),
        ("bind", "clusterroles.rbac.authorization.k8s.io", None, ()),
        ("create", "clusterroles.rbac.authorization.k8s.io", None, ()),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, ()),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", None, ()),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", None, ()),
        ("delete", "namespaces", None, ()),
        ("get", "nodes", None, ()),
        ("impersonate", "users", None, ()),
        ("create", "airflowassetsyncs.airflow-asset-sync.github.io", ns, ()),
        ("delete", "airflowassetsyncs.airflow-asset-sync.github.io", ns, ()),
    ]
    allowed = [(v, r, n, e) for v, r, n, e in denied if rel.can(v, r, n, *e)]
    assert not allowed, f"the chart's ServiceAccount may also: {allowed}"


def test_namespaced_release_runs_the_operator_in_its_namespaces_only(namespaced: Release) -> None:
    rel, kube = namespaced, namespaced.kube
    args = rel.container["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=pkg-ns-a",
        "--namespace=pkg-ns-b",
    ]
    proc = release.operator_process(rel, name="chart-nsd")
    proc.start()
    try:
        outside = _secrets_and_sync(kube, "pkg-ns-x", "ns-outside")
        _secrets_and_sync(kube, "pkg-ns-a", "ns-sample")
        assert_reconciles_to_ready(rel, proc, "pkg-ns-a", "ns-sample")
        # By now the operator has listed and handled what it watches; the unwatched namespace's
        # sync is untouched: no finalizer, no status, no worker.
        obj = get(kube, api.PLURAL, outside["metadata"]["name"], "pkg-ns-x")
        assert obj is not None
        assert not obj["metadata"].get("finalizers")
        assert not obj.get("status")
        assert get(kube, "deployment", naming.worker_name("ns-outside"), "pkg-ns-x") is None
        delete_sync(kube, "pkg-ns-a", "ns-sample")
    finally:
        leave_no_finalizers(kube, "pkg-ns-a")
        proc.stop()
        leave_no_finalizers(kube, "pkg-ns-x")


def test_namespaced_release_grants_nothing_outside_its_namespaces(namespaced: Release) -> None:
    rel = namespaced
    for ns in ("pkg-ns-a", "pkg-ns-b"):
        assert rel.can("create", "deployments.apps", ns)
        assert rel.can("get", "secrets", ns)
        assert rel.can("patch", "airflowassetsyncs.airflow-asset-sync.github.io", ns)
        assert rel.can("patch", "kopfpeerings.kopf.dev", ns)
    assert rel.can("list", "namespaces")
    assert rel.can("watch", "customresourcedefinitions.apiextensions.k8s.io")
    denied = [
        ("get", "secrets", "pkg-ns-x"),
        ("get", "secrets", rel.namespace),
        ("create", "deployments.apps", "pkg-ns-x"),
        ("list", "airflowassetsyncs.airflow-asset-sync.github.io", "pkg-ns-x"),
        ("create", "roles.rbac.authorization.k8s.io", "pkg-ns-x"),
        ("create", "events", "pkg-ns-x"),
        ("list", "airflowassetsyncs.airflow-asset-sync.github.io", None),
        ("list", "secrets", None),
        ("patch", "clusterkopfpeerings.kopf.dev", None),
        ("create", "pods", "pkg-ns-a"),
        ("list", "secrets", "pkg-ns-a"),
    ]
    allowed = [(v, r, n) for v, r, n in denied if rel.can(v, r, n)]
    assert not allowed, f"the namespace-scoped ServiceAccount may also: {allowed}"


def test_ha_release_operator_joins_the_chart_peering(chart_crds: KubeRig) -> None:
    kube = chart_crds
    rel = release.install(
        kube, "ha", namespace(kube, "pkg-ha"), values=[CHART / "ci" / "ha-with-peering-values.yaml"]
    )
    peering = "ha-airflow-asset-sync"
    try:
        assert rel.deployment["spec"]["replicas"] == 2
        assert f"--peering={peering}" in rel.container["args"]
        kube.kubectl("get", "clusterkopfpeering", peering)  # made by the chart

        def peers() -> dict[str, Any]:
            obj = json.loads(
                kube.kubectl("get", "clusterkopfpeering", peering, "-o", "json").stdout
            )
            return dict(obj.get("status") or {})

        assert peers() == {}
        proc = release.operator_process(rel, name="chart-ha")
        proc.start()
        try:
            wait_for(peers, what=f"the operator in ClusterKopfPeering {peering}", timeout_s=60)
            ns = namespace(kube, "pkg-ha-apps")
            _secrets_and_sync(kube, ns, "ha-sample")
            assert_reconciles_to_ready(rel, proc, ns, "ha-sample")
            delete_sync(kube, ns, "ha-sample")
        finally:
            leave_no_finalizers(kube, "pkg-ha-apps")
            proc.stop()
        # On a clean exit the operator removes itself from the peering (a patch it may do).
        wait_for(lambda: peers() == {}, what="the operator leaving the peering", timeout_s=30)
    finally:
        rel.uninstall()
