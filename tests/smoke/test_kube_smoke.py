"""The rig's API server is real: CRDs, custom resources, the status subresource and RBAC work."""

from __future__ import annotations

import json

import pytest

from rig.kube import KubeRig

pytestmark = pytest.mark.rig

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.rig.test}
spec:
  group: smoke.rig.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties: {size: {type: integer, minimum: 1}}
            status:
              type: object
              properties: {phase: {type: string}}
"""

WIDGET = """
apiVersion: smoke.rig.test/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
"""


def test_crd_custom_resource_and_status_subresource(kube: KubeRig) -> None:
    kube.kubectl("apply", "-f", "-", input=CRD)
    kube.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.rig.test", "--timeout=60s"
    )
    kube.kubectl("apply", "-f", "-", input=WIDGET)
    assert kube.get_json("widget", "w1")["spec"] == {"size": 3}

    # A status patch through the subresource sticks; a spec change through it is ignored.
    kube.kubectl(
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Ready"}, "spec": {"size": 9}}),
    )
    widget = kube.get_json("widget", "w1")
    assert widget["status"] == {"phase": "Ready"}
    assert widget["spec"] == {"size": 3}

    # The schema is enforced by the real API server.
    bad = kube.kubectl("apply", "-f", "-", input=WIDGET.replace("size: 3", "size: 0"), check=False)
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr

    kube.kubectl("delete", "widget", "w1", "--wait=true")
    gone = kube.kubectl("get", "widget", "w1", check=False)
    assert "NotFound" in gone.stderr
    kube.kubectl("delete", "crd", "widgets.smoke.rig.test")


def test_rbac_denies_a_non_admin_identity(kube: KubeRig) -> None:
    kube.kubectl("create", "namespace", "smoke-rbac")
    kube.kubectl("create", "serviceaccount", "reader", "-n", "smoke-rbac")
    kube.kubectl(
        "create",
        "role",
        "cm-reader",
        "-n",
        "smoke-rbac",
        "--verb=get,list",
        "--resource=configmaps",
    )
    kube.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        "smoke-rbac",
        "--role=cm-reader",
        "--serviceaccount=smoke-rbac:reader",
    )
    kube.kubectl("create", "configmap", "c1", "-n", "smoke-rbac", "--from-literal=k=v")
    kube.kubectl("create", "secret", "generic", "s1", "-n", "smoke-rbac", "--from-literal=k=v")

    as_sa = kube.mint_service_account("smoke-rbac", "reader")
    allowed = kube.kubectl(
        "get", "configmap", "c1", "-n", "smoke-rbac", "-o", "name", kubeconfig=as_sa
    )
    assert allowed.stdout.strip() == "configmap/c1"

    denied = kube.kubectl("get", "secret", "s1", "-n", "smoke-rbac", kubeconfig=as_sa, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'cannot get resource "secrets"' in denied.stderr

    other_ns = kube.kubectl("get", "configmaps", "-n", "default", kubeconfig=as_sa, check=False)
    assert "Forbidden" in other_ns.stderr
