"""The chart's RBAC is exactly `rbac.operator_rules()`: written out in the chart's template,
checked here against the code so the two cannot drift.

Cluster-wide, one ClusterRole holds every rule in the code's order. Namespace-scoped, each
watched namespace gets a Role with the rules on namespaced resources, and one ClusterRole
holds the rules on cluster-scoped resources (read-only discovery of CRDs and namespaces),
minus ClusterKopfPeerings, which a namespace-scoped operator never uses (its peering objects
are KopfPeerings in its namespaces). Which resources are cluster-scoped is asked of the real
API server in the rig test at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from airflow_asset_sync.resources import rbac
from rig.kube import KubeRig
from support.chart import render, select
from support.packaging_tools import CHART

#: (apiGroup, resource) pairs of `operator_rules()` that are cluster-scoped.
CLUSTER_SCOPED = frozenset(
    {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
        ("kopf.dev", "clusterkopfpeerings"),
    }
)
#: Needed cluster-wide only (see the module docstring).
CLUSTERWIDE_ONLY = frozenset({("kopf.dev", "clusterkopfpeerings")})

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def grants(rules: Iterable[Mapping[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames etc.
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def _base(resource: str) -> str:
    return resource.split("/", 1)[0]


def code_grants(*, cluster_scoped: bool) -> set[Grant]:
    return {
        g
        for g in grants(rbac.operator_rules())
        if ((g[0], _base(g[1])) in CLUSTER_SCOPED) == cluster_scoped
    }


def test_clusterwide_clusterrole_is_operator_rules_verbatim() -> None:
    objs = render()
    (role,) = select(objs, "ClusterRole")
    assert role["rules"] == rbac.operator_rules()
    (binding,) = select(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "aas-airflow-asset-sync", "namespace": "aas-system"}
    ]
    assert not select(objs, "Role") + select(objs, "RoleBinding")


def test_namespaced_rules_are_operator_rules_split_by_scope() -> None:
    objs = render(values=[CHART / "ci" / "namespaced-values.yaml"])
    roles = select(objs, "Role")
    assert len(roles) == 2
    for role in roles:
        assert grants(role["rules"]) == code_grants(cluster_scoped=False)
    (cluster_role,) = select(objs, "ClusterRole")
    assert grants(cluster_role["rules"]) == {
        g for g in code_grants(cluster_scoped=True) if (g[0], _base(g[1])) not in CLUSTERWIDE_ONLY
    }
    (binding,) = select(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    for role_binding in select(objs, "RoleBinding"):
        assert role_binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[0]["metadata"]["name"],
        }


def test_no_wildcards_and_no_privilege_verbs() -> None:
    for values in ([], [CHART / "ci" / "namespaced-values.yaml"]):
        objs = render(values=values)
        for obj in select(objs, "Role") + select(objs, "ClusterRole"):
            for group, resource, verb in grants(obj["rules"]):
                assert "*" not in (group, resource, verb)
                assert verb not in ("escalate", "bind", "impersonate"), (group, resource, verb)
                assert not (resource == "secrets" and verb in ("list", "watch")), verb
                assert resource not in ("pods", "pods/exec", "clusterroles", "nodes")


@pytest.mark.rig
def test_cluster_scoped_set_matches_the_api_server(chart_crds: KubeRig) -> None:
    """CLUSTER_SCOPED above is what the real API server says (with the chart's CRDs)."""
    kube = chart_crds
    wanted = {(g, _base(r)) for g, r, _ in grants(rbac.operator_rules())}

    def scoped(namespaced: bool) -> set[tuple[str, str]]:
        out = kube.kubectl(
            "api-resources", f"--namespaced={str(namespaced).lower()}", "-o", "name"
        ).stdout
        pairs = set()
        for line in out.split():
            resource, _, group = line.partition(".")
            pairs.add((group, resource))
        return pairs

    cluster, namespaced = scoped(False), scoped(True)
    assert wanted <= cluster | namespaced, sorted(wanted - cluster - namespaced)
    assert {p for p in wanted if p in cluster} == CLUSTER_SCOPED
