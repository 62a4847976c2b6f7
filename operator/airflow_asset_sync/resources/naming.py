"""Names, labels, env variable names, paths and ports the operator and the worker agree on.

This module is the contract between the two processes: the operator writes a Deployment with
these env names, mount paths and probe paths, and the worker reads them back with the very
same functions (so a rename cannot break one side silently).

Length safety: an AirflowAssetSync name may be up to 253 characters, but label values (and,
in practice, names of objects whose pods take them as a prefix) are limited to 63. Names
that would overflow are shortened and given a hash of the full name, so two long names that
share a prefix still map to different children.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from airflow_asset_sync.api.spec import API_VERSION, GROUP, KIND

#: `app.kubernetes.io/name` of everything this project runs.
APP_NAME = "airflow-asset-sync"
#: `app.kubernetes.io/managed-by` of children the operator owns; the operator watches
#: Deployments with this label to notice rollouts of its workers.
MANAGED_BY = "airflow-asset-sync-operator"
COMPONENT_WORKER = "worker"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"

#: Pod-template annotation: hash of the spec. A spec change changes the template, so the
#: Deployment rolls the worker, which reads its spec once at start.
SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"
#: Pod-template annotation: hash of the referenced Secrets' resourceVersions. Env values from
#: Secrets are fixed at container start, so a rotated password needs a new pod.
SECRETS_HASH_ANNOTATION = f"{GROUP}/secrets-hash"

WORKER_CONTAINER = "worker"
#: One HTTP port on the worker serves metrics and both probes.
METRICS_PORT = 8080
METRICS_PORT_NAME = "metrics"
METRICS_PATH = "/metrics"
#: Liveness: the process's loops are alive. Readiness: the worker is syncing (source
#: reachable, checkpoint loaded). Both served on `METRICS_PORT`.
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
#: Pokes from the source's listener plugin (`spec.source.push`), on `METRICS_PORT` too:
#: one server, one port, one Service port.
POKE_PATH = "/poke"
#: Env variable holding the shared poke token (`spec.source.push.token`).
ENV_POKE_TOKEN = "AAS_POKE_TOKEN"

#: Env variables naming the AirflowAssetSync the worker serves.
ENV_NAMESPACE = "AAS_NAMESPACE"
ENV_NAME = "AAS_NAME"

#: CA bundles are mounted below this directory, one folder per endpoint, always as `ca.crt`
#: whatever the Secret key is called (see `source_ca_file` and friends).
CA_ROOT = "/etc/airflow-asset-sync/ca"
CA_FILE = "ca.crt"
#: A writable scratch directory (the root filesystem is read-only).
TMP_DIR = "/tmp"  # noqa: S108 -- an emptyDir of the pod's own, not a shared /tmp

MAX_NAME_LENGTH = 63
_HASH_LENGTH = 8

CredentialField = Literal["USERNAME", "PASSWORD", "TOKEN"]
KafkaCredentialField = Literal["USERNAME", "PASSWORD"]


@dataclass(frozen=True, kw_only=True)
class Owner:
    """The AirflowAssetSync that owns the children: what owner references need."""

    name: str
    namespace: str
    uid: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


def _shorten(text: str, *, limit: int, suffix: str = "") -> str:
    """`text + suffix` within `limit`; when cut, a hash of `text` keeps it unique."""
    if len(text) + len(suffix) <= limit:
        return text + suffix
    keep = limit - len(suffix) - _HASH_LENGTH - 1
    return f"{text[:keep].rstrip('-.')}-{_digest(text)}{suffix}"


def worker_name(sync_name: str) -> str:
    """Name of the worker's Deployment, ServiceAccount, Role and RoleBinding.

    One name for all four kinds: they live in separate name spaces per kind, and one name
    makes `kubectl get deploy,sa,role,rolebinding <name>` show the whole set.
    """
    return _shorten(sync_name, limit=MAX_NAME_LENGTH, suffix="-worker")


def label_value(text: str) -> str:
    """A label value (at most 63 characters) that still identifies `text`."""
    return _shorten(text, limit=MAX_NAME_LENGTH)


def selector_labels(sync_name: str) -> dict[str, str]:
    """Labels that select the worker's pods. Immutable in a Deployment: never add to these."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: label_value(sync_name),
        LABEL_COMPONENT: COMPONENT_WORKER,
    }


def labels(sync_name: str) -> dict[str, str]:
    """Labels on every child object and on the worker pods."""
    return {
        **selector_labels(sync_name),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: APP_NAME,
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller owner reference to the AirflowAssetSync.

    This is what deletes the children: the garbage collector deletes them with their
    AirflowAssetSync, whether or not the operator runs (the operator holds no finalizer and
    deletes nothing itself when a sync goes, only the worker Service when `push` does; a
    bare kube-apiserver without the controller manager, such as the test rig, leaves
    them). `blockOwnerDeletion` makes a foreground deletion
    (`kubectl delete --cascade=foreground`) wait for them. `blockOwnerDeletion` needs the
    operator to be allowed `update` on `airflowassetsyncs/finalizers` where the
    OwnerReferencesPermissionEnforcement admission plugin is on.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(*, owner: Owner, name: str) -> dict[str, Any]:
    """Metadata shared by every child: name, namespace, labels, owner reference."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name),
        "ownerReferences": [owner_reference(owner)],
    }


def _env_token(target_name: str) -> str:
    """Target names are DNS labels (`[a-z0-9-]`), so this mapping is one-to-one."""
    return target_name.upper().replace("-", "_")


def source_credential_env(field: CredentialField) -> str:
    """Env variable holding a source credential, e.g. `AAS_SOURCE_PASSWORD`."""
    return f"AAS_SOURCE_{field}"


def target_credential_env(target_name: str, field: CredentialField) -> str:
    """Env variable holding a target credential, e.g. `AAS_TARGET_V3_NEW_TOKEN`."""
    return f"AAS_TARGET_{_env_token(target_name)}_{field}"


def worker_service_name(sync_name: str) -> str:
    """The worker's Service (only with `spec.source.push`): the worker's own name, as the
    Deployment, ServiceAccount and Lease have; kinds keep them apart."""
    return worker_name(sync_name)


def poke_url(sync_name: str, namespace: str) -> str:
    """Where the source's listener plugin sends pokes: the Service's cluster DNS name."""
    service = worker_service_name(sync_name)
    return f"http://{service}.{namespace}.svc:{METRICS_PORT}{POKE_PATH}"


def kafka_credential_env(field: KafkaCredentialField) -> str:
    """Env variable holding a Kafka SASL credential, e.g. `AAS_KAFKA_USERNAME`."""
    return f"AAS_KAFKA_{field}"


def source_ca_dir() -> str:
    return f"{CA_ROOT}/source"


def target_ca_dir(target_name: str) -> str:
    return f"{CA_ROOT}/targets/{target_name}"


def kafka_ca_dir() -> str:
    return f"{CA_ROOT}/kafka"


def source_ca_file() -> str:
    """Path of the source's CA bundle in the worker, when `spec.source.tls.caSecretName` is set."""
    return f"{source_ca_dir()}/{CA_FILE}"


def target_ca_file(target_name: str) -> str:
    """Path of a target's CA bundle in the worker, when its `tls.caSecretName` is set."""
    return f"{target_ca_dir(target_name)}/{CA_FILE}"


def kafka_ca_file() -> str:
    """Path of Kafka's CA bundle in the worker, when `spec.kafka.security.caSecretName` is set."""
    return f"{kafka_ca_dir()}/{CA_FILE}"


#: Annotation on every child: a hash of the body the operator last applied. The operator's
#: watch of its children keeps this hash (`controller.observed`), so a periodic resync of a
#: child that still matches what it would apply costs no API request.
APPLIED_HASH_ANNOTATION = f"{GROUP}/applied-hash"
