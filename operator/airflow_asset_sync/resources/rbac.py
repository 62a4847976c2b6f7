"""The worker's identity (ServiceAccount, Role, RoleBinding) and the operator's own rules.

Least privilege, because a worker holds credentials to Airflow instances: it may read and
watch its own AirflowAssetSync and patch that object's status, and nothing else. It gets no
`list` (it never needs other syncs), no Secrets (its credentials arrive as env and files,
which the kubelet resolves), no events.

A watch restricted by `resourceNames` must name the object with a field selector
(`metadata.name=<name>`): the worker's watch has to be written that way.

One more object: the sync's Lease (`coordination.k8s.io`, named like the other children),
which makes the worker the only writer of its sync (see `worker.lease`). Reading and
updating it is restricted to that name. Creating it cannot be: Kubernetes does not apply
`resourceNames` to `create` (the name is not known when the request is authorized), so the
worker may create Leases in its namespace, but not read, change or delete any other one.
The alternative, the operator pre-creating the Lease as a fifth child, would drop that
`create` but tie the worker's start to the operator's reconcile (and a Lease deleted by hand
would leave the worker unable to write until the operator re-created it); the worker creating
its own Lease keeps it self-sufficient. No `patch` or `delete`: it releases by clearing
`holderIdentity` in an update.
"""

from __future__ import annotations

from typing import Any

from airflow_asset_sync.api.spec import GROUP, PLURAL
from airflow_asset_sync.resources.naming import Owner, metadata, worker_name


def service_account(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(owner=owner, name=worker_name(owner.name)),
    }


#: The API group of Leases.
COORDINATION = "coordination.k8s.io"


def worker_rules(sync_name: str) -> list[dict[str, Any]]:
    """The worker Role's rules: its own object and Lease by name, plus creating the Lease."""
    return [
        {
            "apiGroups": [GROUP],
            "resources": [PLURAL],
            "resourceNames": [sync_name],
            "verbs": ["get", "watch"],
        },
        {
            "apiGroups": [GROUP],
            "resources": [f"{PLURAL}/status"],
            "resourceNames": [sync_name],
            "verbs": ["patch"],
        },
        {
            "apiGroups": [COORDINATION],
            "resources": ["leases"],
            "resourceNames": [worker_name(sync_name)],
            "verbs": ["get", "update"],
        },
        # `create` ignores resourceNames (see the module docstring).
        {"apiGroups": [COORDINATION], "resources": ["leases"], "verbs": ["create"]},
    ]


def role(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(owner=owner, name=worker_name(owner.name)),
        "rules": worker_rules(owner.name),
    }


def role_binding(owner: Owner) -> dict[str, Any]:
    name = worker_name(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(owner=owner, name=name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }


def operator_rules() -> list[dict[str, Any]]:
    """What the operator itself needs, for the chart's (Cluster)Role.

    Kept here, next to the worker's rules, so the two cannot drift: Kubernetes forbids
    granting in a Role what the granter does not hold (privilege escalation check), so the
    operator must hold every worker verb itself.
    """
    return [
        {
            "apiGroups": [GROUP],
            "resources": [PLURAL],
            "verbs": ["get", "list", "watch", "patch"],
        },
        {
            "apiGroups": [GROUP],
            "resources": [f"{PLURAL}/status"],
            "verbs": ["get", "patch"],
        },
        {
            # Owner references with blockOwnerDeletion need this where the
            # OwnerReferencesPermissionEnforcement admission plugin is enabled.
            "apiGroups": [GROUP],
            "resources": [f"{PLURAL}/finalizers"],
            "verbs": ["update"],
        },
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        # The worker's Service, with `spec.source.push` (and deleted when push goes).
        {
            "apiGroups": [""],
            "resources": ["services"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["roles", "rolebindings"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        # Secrets: only `get`, to check that referenced keys exist (values are not kept).
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        # Only to grant them to workers (their sync's Lease); the operator uses none of them.
        {
            "apiGroups": [COORDINATION],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        },
        # kopf peering (two replicas, one active) and its CRD discovery.
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings", "kopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"],
        },
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    ]
