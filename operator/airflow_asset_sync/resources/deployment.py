"""The worker Deployment.

Shape, and why:
- one replica and the `Recreate` strategy: two pollers of one source would publish every
  event twice and race on the checkpoint, so the old pod must be gone before a new one starts
  (a RollingUpdate would briefly run two);
- `replicas: 0` while `spec.suspend` is true: the pod stops, its offsets stay where they are;
- the same image as the operator, `worker` subcommand, unless `spec.worker.image` says
  otherwise;
- the restricted Pod Security Standard (non-root, read-only root filesystem, no privilege
  escalation, all capabilities dropped, RuntimeDefault seccomp) with an emptyDir at `/tmp`;
  `runAsUser` is left to the image (a numeric `USER`) so OpenShift can assign its own UID;
- liveness and readiness on the metrics port, so a wedged worker is restarted and an
  unready one shows as an unavailable Deployment (and `Ready=False` on the sync); a startup
  probe and initial delays so that a normal start logs no failed probe (`_container`);
- a spec hash on the pod template, so a spec change (the worker reads its spec at start)
  rolls the pod; a hash of the referenced Secrets' versions, so a rotated credential does too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from airflow_asset_sync.api.spec import SyncSpec
from airflow_asset_sync.resources.credentials import ca_bundles, env_credentials
from airflow_asset_sync.resources.naming import (
    CA_FILE,
    ENV_NAME,
    ENV_NAMESPACE,
    HEALTHZ_PATH,
    METRICS_PORT,
    METRICS_PORT_NAME,
    READYZ_PATH,
    SECRETS_HASH_ANNOTATION,
    SPEC_HASH_ANNOTATION,
    TMP_DIR,
    WORKER_CONTAINER,
    Owner,
    labels,
    metadata,
    selector_labels,
    worker_name,
)

#: Kept short: Recreate means a long grace period is a long outage. The worker commits
#: offsets on SIGTERM well within it.
TERMINATION_GRACE_SECONDS = 30
REVISION_HISTORY_LIMIT = 3
#: Secret volumes are read-only files readable by whatever UID the pod runs as.
SECRET_FILE_MODE = 0o444


def resolve_image(spec: SyncSpec, *, default: str | None) -> str | None:
    """`spec.worker.image` if set, else the operator's configured worker image."""
    if spec.worker is not None and spec.worker.image:
        return spec.worker.image
    return default


def spec_hash(spec: SyncSpec) -> str:
    """A hash of the spec as written, ignoring `suspend`.

    As written (`exclude_unset`), not with defaults filled in: an operator upgrade that
    changes a default must not roll every worker. `suspend` is left out because it already
    acts through `replicas`.
    """
    essence = spec.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"suspend"})
    return hashlib.sha256(json.dumps(essence, sort_keys=True).encode()).hexdigest()[:16]


def secrets_hash(secret_versions: Mapping[str, str]) -> str:
    """A hash of `{secret name: resourceVersion}` for the Secrets the worker reads."""
    text = json.dumps(dict(sorted(secret_versions.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(owner: Owner, spec: SyncSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": ENV_NAMESPACE, "value": owner.namespace},
        {"name": ENV_NAME, "value": owner.name},
    ]
    for cred in env_credentials(spec):
        env.append(
            {
                "name": cred.env_name,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": cred.secret_name,
                        "key": cred.key,
                        "optional": False,
                    }
                },
            }
        )
    return env


def _volumes(spec: SyncSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_DIR}]
    for bundle in ca_bundles(spec):
        volumes.append(
            {
                "name": bundle.volume_name,
                "secret": {
                    "secretName": bundle.secret_name,
                    "items": [{"key": bundle.key, "path": CA_FILE}],
                    "defaultMode": SECRET_FILE_MODE,
                },
            }
        )
        mounts.append({"name": bundle.volume_name, "mountPath": bundle.mount_dir, "readOnly": True})
    return volumes, mounts


#: Seconds before the first startup probe: the interpreter has imported the worker and its
#: HTTP server listens well within this on a normal start.
STARTUP_DELAY_SECONDS = 5
#: Seconds before the first readiness probe: the first poll is made at once after start.
READINESS_DELAY_SECONDS = 10


def _probe(
    path: str, *, period_seconds: int, failure_threshold: int, initial_delay_seconds: int = 0
) -> dict[str, Any]:
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": METRICS_PORT_NAME}}
    if initial_delay_seconds:
        probe["initialDelaySeconds"] = initial_delay_seconds
    return {
        **probe,
        "periodSeconds": period_seconds,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _container(
    *, owner: Owner, spec: SyncSpec, image: str, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": image,
        "args": ["worker", "--namespace", owner.namespace, "--name", owner.name],
        "env": _env(owner, spec),
        "ports": [
            {
                "name": METRICS_PORT_NAME,
                "containerPort": METRICS_PORT,
                "protocol": "TCP",
            }
        ],
        # Startup: /healthz (live, answered as soon as the HTTP server listens), first asked
        # after the process has had time to start, then every 2 s for up to 35 s; liveness and
        # readiness wait for it. Not /readyz: a source that is down at start must show as
        # not-ready, not get the pod restarted. Liveness is lenient (a minute of failures) so
        # a slow source API does not cause restarts; readiness is quick so Ready on the sync
        # reflects trouble soon, and starts after the first poll has had time to succeed.
        "startupProbe": _probe(
            HEALTHZ_PATH,
            period_seconds=2,
            failure_threshold=15,
            initial_delay_seconds=STARTUP_DELAY_SECONDS,
        ),
        "livenessProbe": _probe(HEALTHZ_PATH, period_seconds=10, failure_threshold=6),
        "readinessProbe": _probe(
            READYZ_PATH,
            period_seconds=5,
            failure_threshold=3,
            initial_delay_seconds=READINESS_DELAY_SECONDS,
        ),
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }
    if spec.worker is not None and spec.worker.resources is not None:
        container["resources"] = spec.worker.resources
    return container


def _pod_spec(*, owner: Owner, spec: SyncSpec, image: str) -> dict[str, Any]:
    volumes, mounts = _volumes(spec)
    pod: dict[str, Any] = {
        "serviceAccountName": worker_name(owner.name),
        "automountServiceAccountToken": True,
        # Service links add an env variable per Service in the namespace: noise, and a
        # startup cost in large namespaces.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(owner=owner, spec=spec, image=image, mounts=mounts)],
        "volumes": volumes,
    }
    worker = spec.worker
    if worker is not None:
        if worker.node_selector is not None:
            pod["nodeSelector"] = worker.node_selector
        if worker.tolerations is not None:
            pod["tolerations"] = worker.tolerations
        if worker.affinity is not None:
            pod["affinity"] = worker.affinity
        if worker.priority_class_name:
            pod["priorityClassName"] = worker.priority_class_name
    return pod


def worker_deployment(
    *,
    owner: Owner,
    spec: SyncSpec,
    image: str,
    secret_versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The worker Deployment for one AirflowAssetSync.

    `secret_versions` maps each referenced Secret to its resourceVersion (see
    `credentials.secret_names`); a change rolls the pod so new credentials take effect.
    """
    template_annotations = {SPEC_HASH_ANNOTATION: spec_hash(spec)}
    if secret_versions:
        template_annotations[SECRETS_HASH_ANNOTATION] = secrets_hash(secret_versions)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner=owner, name=worker_name(owner.name)),
        "spec": {
            "replicas": 0 if spec.suspend else 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "selector": {"matchLabels": selector_labels(owner.name)},
            "template": {
                "metadata": {
                    "labels": labels(owner.name),
                    "annotations": template_annotations,
                },
                "spec": _pod_spec(owner=owner, spec=spec, image=image),
            },
        },
    }
