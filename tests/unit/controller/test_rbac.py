"""The worker's RBAC: its own object by name, get and watch, status patch; nothing else."""

from __future__ import annotations

from airflow_asset_sync.resources import naming, rbac

OWNER = naming.Owner(name="orders", namespace="data", uid="u-1")
META = {
    "name": "orders-worker",
    "namespace": "data",
    "labels": naming.labels("orders"),
    "ownerReferences": [naming.owner_reference(OWNER)],
}


def test_service_account() -> None:
    assert rbac.service_account(OWNER) == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": META,
    }


def test_role_rules_are_exactly_these() -> None:
    assert rbac.role(OWNER) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": META,
        "rules": [
            {
                "apiGroups": ["airflow-asset-sync.github.io"],
                "resources": ["airflowassetsyncs"],
                "resourceNames": ["orders"],
                "verbs": ["get", "watch"],
            },
            {
                "apiGroups": ["airflow-asset-sync.github.io"],
                "resources": ["airflowassetsyncs/status"],
                "resourceNames": ["orders"],
                "verbs": ["patch"],
            },
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": ["orders-worker"],
                "verbs": ["get", "update"],
            },
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ],
    }


def test_role_names_the_full_object_name_even_when_children_are_shortened() -> None:
    owner = naming.Owner(name="x" * 100, namespace="data", uid="u-1")
    role = rbac.role(owner)
    assert len(role["metadata"]["name"]) <= 63
    by_name = [rule["resourceNames"] for rule in role["rules"] if "resourceNames" in rule]
    assert by_name == [["x" * 100], ["x" * 100], [role["metadata"]["name"]]]


def test_role_binding_binds_the_role_to_the_service_account() -> None:
    assert rbac.role_binding(OWNER) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": META,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "orders-worker",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "orders-worker", "namespace": "data"}],
    }


def _grants(rules: list[dict[str, object]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]  # type: ignore[operator]
        for r in rules
    )


def test_operator_holds_every_verb_it_grants_the_worker() -> None:
    """Kubernetes refuses to create a Role granting more than its creator holds."""
    operator = rbac.operator_rules()
    for rule in rbac.worker_rules("orders"):
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                assert _grants(operator, rule["apiGroups"][0], resource, verb), (resource, verb)


def test_operator_reads_secrets_but_never_lists_or_writes_them() -> None:
    secrets = [r for r in rbac.operator_rules() if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
