"""The Helm chart, rendered by a real helm: lint, values schema, and what each setting renders.

No API server here: these check the chart's own logic. `test_chart_rig.py` sends the same
renders to the rig's kube-apiserver and installs the chart for real.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rig.cache import ROOT
from support import chart
from support.chart import env_of, find, operator_container, render, select
from support.packaging_tools import CHART

RELEASE_NS = "aas-system"


def test_ci_values_cover_the_documented_modes() -> None:
    names = {p.name for p in chart.CI_VALUES}
    assert names == {
        "default-values.yaml",
        "namespaced-values.yaml",
        "ha-with-peering-values.yaml",
        "monitoring-values.yaml",
    }


@pytest.mark.parametrize("values", chart.CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(values: Path) -> None:
    result = chart.helm(
        "lint", "--strict", str(CHART), "--kube-version", chart.KUBE_VERSION, "-f", str(values)
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_chart_versions_follow_the_package() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["appVersion"] == project["version"]
    # SemVer 2 spelling of the same PEP 440 version: 0.1.0.dev0 -> 0.1.0-dev.0.
    release, _, dev = project["version"].partition(".dev")
    assert meta["version"] == (f"{release}-dev.{dev}" if dev else release)


# --- values.schema.json -------------------------------------------------------------------


def _object_nodes(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, child in node.items():
            yield from _object_nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _object_nodes(child, f"{path}/{i}")


def test_schema_closes_every_object() -> None:
    """Every object either forbids unknown keys or is a map whose values are typed."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = list(_object_nodes(schema, ""))
    assert len(nodes) > 40
    for path, node in nodes:
        extra = node.get("additionalProperties")
        assert extra is False or (isinstance(extra, dict) and "properties" not in node), (
            f"{path} accepts unknown keys"
        )


def test_schema_lists_every_default_value() -> None:
    """values.yaml and the schema name the same keys (a key missing from the schema would be
    rejected by the chart's own defaults; one missing from values.yaml is undocumented)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: Any, defaults: Any, path: str) -> None:
        if node.get("type") != "object" or "properties" not in node:
            return
        assert set(node["properties"]) == set(defaults), path
        for key, sub in node["properties"].items():
            if "$ref" not in sub:
                keys(sub, defaults[key], f"{path}.{key}")

    keys(schema, values, "values")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "replicas=2"], "additional properties 'replicas' not allowed"),
        (["--set", "image.pulPolicy=Always"], "at '/image': additional properties 'pulPolicy'"),
        (
            ["--set", "metrics.prometheusRule.lag.treshold=10"],
            "at '/metrics/prometheusRule/lag': additional properties 'treshold'",
        ),
        (
            ["--set-json", 'securityContext={"runAsNonroot":true}'],
            "at '/securityContext': additional properties 'runAsNonroot'",
        ),
        (
            ["--set-json", 'affinity={"nodeAfinity":{}}'],
            "at '/affinity': additional properties 'nodeAfinity'",
        ),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
        (["--set", "watchNamespaces={Team_A}"], "at '/watchNamespaces/0'"),
        (["--set", "operator.resyncSeconds=0"], "at '/operator/resyncSeconds'"),
    ],
)
def test_schema_rejects_and_names_the_bad_key(args: list[str], named: str) -> None:
    result = chart.helm(
        "template", "t", str(CHART), "--kube-version", chart.KUBE_VERSION, *args, check=False
    )
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def test_more_than_one_replica_needs_peering() -> None:
    result = chart.template_text(sets={"replicaCount": "2"}, check=False)
    assert result.returncode != 0
    assert "replicaCount > 1 needs peering.enabled=true" in result.stderr


def test_chart_requires_a_kubernetes_with_cel_rules() -> None:
    result = chart.helm("template", "t", str(CHART), "--kube-version", "v1.28.9", check=False)
    assert "chart requires kubeVersion: >=1.29.0-0" in result.stderr


# --- CRDs ---------------------------------------------------------------------------------


def test_chart_crds_are_identical_copies_of_crds() -> None:
    """Helm installs charts/.../crds/ on first install; crds/ is the source of truth."""
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart_crds == ["airflowassetsync.yaml", "kopf-peering.yaml"]
    for name in chart_crds:
        source = ROOT / "crds" / name
        assert (CHART / "crds" / name).read_bytes() == source.read_bytes(), (
            f"charts/airflow-asset-sync/crds/{name} differs from crds/{name}: "
            f"cp crds/{name} charts/airflow-asset-sync/crds/"
        )


# --- the operator Deployment --------------------------------------------------------------


def test_default_deployment() -> None:
    objs = render()
    deploy = find(objs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "aas-airflow-asset-sync"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = operator_container(objs)
    assert container["image"] == "airflow-asset-sync:0.1.0.dev0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == [
        "--log-format=json",
        "--log-level=INFO",
        "operator",
        "--all-namespaces",
        "--standalone",
        "--liveness-port=8080",
        "--metrics-port=9090",
    ]
    assert env_of(container) == {"AAS_WORKER_IMAGE": "airflow-asset-sync:0.1.0.dev0"}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}

    service = find(objs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert not select(objs, "ServiceMonitor") + select(objs, "PrometheusRule")
    assert not select(objs, "NetworkPolicy") + select(objs, "ClusterKopfPeering")


def test_image_settings_and_worker_image() -> None:
    objs = render(
        sets={
            "image.repository": "registry.example.com/aas",
            "image.tag": "1.2.3",
            "image.pullPolicy": "Always",
            "workerImage": "registry.example.com/aas-worker:1.2.3",
        },
        json_sets=['imagePullSecrets=[{"name":"regcred"}]'],
    )
    container = operator_container(objs)
    assert container["image"] == "registry.example.com/aas:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert env_of(container)["AAS_WORKER_IMAGE"] == "registry.example.com/aas-worker:1.2.3"
    pod = find(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]

    digest = "sha256:" + "ab" * 32
    container = operator_container(render(sets={"image.digest": digest}))
    assert container["image"] == f"airflow-asset-sync@{digest}"
    # The workers run the operator's exact image unless told otherwise.
    assert env_of(container)["AAS_WORKER_IMAGE"] == f"airflow-asset-sync@{digest}"


def test_operator_settings_and_extra_env_reach_the_container() -> None:
    objs = render(
        sets={
            "operator.resyncSeconds": "30",
            "operator.retryBaseSeconds": "2",
            "operator.retryMaxSeconds": "60",
            "operator.logFormat": "text",
            "operator.livenessPort": "8081",
            "operator.metricsPort": "9091",
        },
        json_sets=[
            'extraEnv=[{"name":"HTTPS_PROXY","value":"http://proxy:3128"},'
            '{"name":"TOKEN","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}}]'
        ],
    )
    container = operator_container(objs)
    env = env_of(container)
    assert env["AAS_RESYNC_SECONDS"] == "30"
    assert env["AAS_RETRY_BASE_SECONDS"] == "2"
    assert env["AAS_RETRY_MAX_SECONDS"] == "60"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}} in (
        container["env"]
    )
    assert "--log-format=text" in container["args"]
    assert "--liveness-port=8081" in container["args"]
    assert "--metrics-port=9091" in container["args"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 8081,
        "metrics": 9091,
    }


def test_scheduling_settings() -> None:
    objs = render(values=[CHART / "ci" / "ha-with-peering-values.yaml"])
    pod = find(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in pod["affinity"]
    assert operator_container(objs)["resources"]["limits"] == {"memory": "512Mi"}


def test_namespaced_mode() -> None:
    objs = render(values=[CHART / "ci" / "namespaced-values.yaml"])
    args = operator_container(objs)["args"]
    assert args[args.index("operator") + 1 : args.index("operator") + 3] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert "--all-namespaces" not in args
    roles = select(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = select(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "aas-airflow-asset-sync", "namespace": RELEASE_NS}
        ]
    # The one cluster-wide grant is the read-only discovery role.
    (cluster_role,) = select(objs, "ClusterRole")
    assert {v for rule in cluster_role["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}


def test_ha_with_peering() -> None:
    objs = render(values=[CHART / "ci" / "ha-with-peering-values.yaml"])
    deploy = find(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    args = operator_container(objs)["args"]
    assert "--peering=aas-airflow-asset-sync" in args
    assert "--standalone" not in args
    peering = find(objs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "aas-airflow-asset-sync"


def test_namespaced_peering_makes_a_kopfpeering_per_namespace() -> None:
    objs = render(
        values=[CHART / "ci" / "namespaced-values.yaml"],
        sets={"peering.enabled": "true", "peering.name": "aas-peers", "replicaCount": "2"},
    )
    peerings = select(objs, "KopfPeering", name="aas-peers")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not select(objs, "ClusterKopfPeering")
    assert "--peering=aas-peers" in operator_container(objs)["args"]


def test_two_releases_do_not_collide_on_cluster_scoped_names() -> None:
    one = render(release="aas", namespace="team-a")
    two = render(release="aas", namespace="team-b")

    def cluster_scoped(objs: list[dict[str, Any]]) -> set[str]:
        return {
            o["metadata"]["name"]
            for o in objs
            if o["kind"] in ("ClusterRole", "ClusterRoleBinding")
        }

    assert cluster_scoped(one).isdisjoint(cluster_scoped(two))


def test_service_account_can_be_brought_along() -> None:
    objs = render(sets={"serviceAccount.create": "false", "serviceAccount.name": "mine"})
    assert not select(objs, "ServiceAccount")
    assert find(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    assert find(objs, "ClusterRoleBinding")["subjects"][0]["name"] == "mine"
    result = chart.template_text(sets={"serviceAccount.create": "false"}, check=False)
    assert "serviceAccount.name is required" in result.stderr


def test_rbac_can_be_left_out() -> None:
    objs = render(sets={"rbac.create": "false"})
    kinds = {o["kind"] for o in objs}
    assert kinds.isdisjoint({"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"})


def test_network_policy() -> None:
    objs = render(values=[CHART / "ci" / "monitoring-values.yaml"])
    policy = find(objs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    api, dns = policy["egress"]
    assert [p["port"] for p in api["ports"]] == [443, 6443]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert {p["port"] for p in dns["ports"]} == {53}
