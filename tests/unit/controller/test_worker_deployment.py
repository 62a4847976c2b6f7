"""The worker Deployment builder, against expected dicts."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.resources import credentials, deployment, naming
from support import crd as crdfile

OWNER = naming.Owner(name="orders", namespace="data", uid="u-1")
IMAGE = "example/airflow-asset-sync:1"


def _spec(**changes: Any) -> api.SyncSpec:
    raw: dict[str, Any] = {
        "source": {"url": "http://a:8080", "auth": {"password": {"secretName": "a-creds"}}},
        "targets": [
            {"name": "b", "url": "http://b:8080", "auth": {"token": {"secretName": "b-tok"}}}
        ],
    }
    raw.update(changes)
    return api.SyncSpec.model_validate(raw)


def _full() -> api.SyncSpec:
    docs = crdfile.load_samples()["full.yaml"]
    (doc,) = [d for d in docs if d["kind"] == api.KIND]
    return api.SyncSpec.model_validate(doc["spec"])


def _build(spec: api.SyncSpec, **kwargs: Any) -> dict[str, Any]:
    return deployment.worker_deployment(owner=OWNER, spec=spec, image=IMAGE, **kwargs)


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_minimal_deployment_in_full() -> None:
    spec = _spec()
    secret_ref = {"optional": False}
    assert _build(spec, secret_versions={"a-creds": "7", "b-tok": "9"}) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "orders-worker",
            "namespace": "data",
            "labels": naming.labels("orders"),
            "ownerReferences": [naming.owner_reference(OWNER)],
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": naming.selector_labels("orders")},
            "template": {
                "metadata": {
                    "labels": naming.labels("orders"),
                    "annotations": {
                        "airflow-asset-sync.github.io/spec-hash": deployment.spec_hash(spec),
                        "airflow-asset-sync.github.io/secrets-hash": deployment.secrets_hash(
                            {"a-creds": "7", "b-tok": "9"}
                        ),
                    },
                },
                "spec": {
                    "serviceAccountName": "orders-worker",
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "worker",
                            "image": IMAGE,
                            "args": ["worker", "--namespace", "data", "--name", "orders"],
                            "env": [
                                {"name": "AAS_NAMESPACE", "value": "data"},
                                {"name": "AAS_NAME", "value": "orders"},
                                {
                                    "name": "AAS_SOURCE_USERNAME",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "a-creds",
                                            "key": "username",
                                            **secret_ref,
                                        }
                                    },
                                },
                                {
                                    "name": "AAS_SOURCE_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "a-creds",
                                            "key": "password",
                                            **secret_ref,
                                        }
                                    },
                                },
                                {
                                    "name": "AAS_TARGET_B_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "b-tok",
                                            "key": "token",
                                            **secret_ref,
                                        }
                                    },
                                },
                            ],
                            "ports": [
                                {"name": "metrics", "containerPort": 8080, "protocol": "TCP"}
                            ],
                            "startupProbe": {
                                "httpGet": {"path": "/healthz", "port": "metrics"},
                                "initialDelaySeconds": 5,
                                "periodSeconds": 2,
                                "timeoutSeconds": 5,
                                "failureThreshold": 15,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "metrics"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 5,
                                "failureThreshold": 6,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "metrics"},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 5,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "securityContext": {
                                "runAsNonRoot": True,
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def test_suspended_scales_to_zero() -> None:
    assert _build(_spec(suspend=True))["spec"]["replicas"] == 0
    assert _build(_spec(suspend=False))["spec"]["replicas"] == 1


def test_spec_hash_follows_the_spec_but_not_suspend() -> None:
    base = deployment.spec_hash(_spec())
    assert deployment.spec_hash(_spec()) == base
    assert deployment.spec_hash(_spec(pollInterval="5s")) != base
    assert deployment.spec_hash(_spec(startFrom="earliest")) != base
    # suspend acts through replicas; toggling it must not look like a new spec.
    assert deployment.spec_hash(_spec(suspend=True)) == base


def test_spec_hash_is_of_the_spec_as_written() -> None:
    """An operator upgrade that changes a default must not roll every worker; conversely a
    user spelling out today's default is a spec change (it pins the value)."""
    assert deployment.spec_hash(_spec(pollInterval="1s")) != deployment.spec_hash(_spec())


def test_a_rotated_secret_changes_the_pod_template() -> None:
    one = _build(_spec(), secret_versions={"a-creds": "1", "b-tok": "1"})
    two = _build(_spec(), secret_versions={"a-creds": "2", "b-tok": "1"})
    assert one["spec"]["template"] != two["spec"]["template"]
    assert one["spec"]["selector"] == two["spec"]["selector"]


def test_full_spec_credentials_and_ca_bundles() -> None:
    dep = _build(_full())
    container = _container(dep)
    env = {e["name"]: e for e in container["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs == {
        "AAS_SOURCE_USERNAME": {"name": "legacy-airflow-basic", "key": "user", "optional": False},
        "AAS_SOURCE_PASSWORD": {"name": "legacy-airflow-basic", "key": "pass", "optional": False},
        "AAS_TARGET_ANALYTICS_USERNAME": {
            "name": "analytics-airflow-login",
            "key": "login",
            "optional": False,
        },
        "AAS_TARGET_ANALYTICS_PASSWORD": {
            "name": "analytics-airflow-login",
            "key": "secret",
            "optional": False,
        },
        "AAS_TARGET_REPORTING_TOKEN": {
            "name": "reporting-airflow-token",
            "key": "jwt",
            "optional": False,
        },
        # spec.source.push: the shared token the worker checks pokes against.
        "AAS_POKE_TOKEN": {"name": "legacy-airflow-poke", "key": "poke-token", "optional": False},
        "AAS_KAFKA_USERNAME": {"name": "kafka-sasl", "key": "sasl-user", "optional": False},
        "AAS_KAFKA_PASSWORD": {"name": "kafka-sasl", "key": "sasl-password", "optional": False},
    }
    # No secret value ever appears literally in the Deployment.
    assert all(
        "value" not in e
        for name, e in env.items()
        if name.startswith("AAS_") and name not in ("AAS_NAMESPACE", "AAS_NAME")
    )
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["ca-source"] == {
        "name": "ca-source",
        "secret": {
            "secretName": "legacy-airflow-ca",
            "items": [{"key": "bundle.pem", "path": "ca.crt"}],
            "defaultMode": 0o444,
        },
    }
    assert volumes["ca-target-analytics"]["secret"]["secretName"] == "analytics-airflow-ca"
    assert volumes["ca-kafka"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["ca-source"] == {
        "name": "ca-source",
        "mountPath": "/etc/airflow-asset-sync/ca/source",
        "readOnly": True,
    }
    assert mounts["ca-target-analytics"]["mountPath"] == naming.target_ca_dir("analytics")
    assert mounts["ca-kafka"]["mountPath"] == naming.kafka_ca_dir()
    assert all(m["readOnly"] for name, m in mounts.items() if name != "tmp")


def test_worker_scheduling_comes_from_spec_worker() -> None:
    spec = _full()
    assert spec.worker is not None
    pod = _build(spec)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == spec.worker.tolerations
    assert pod["affinity"] == spec.worker.affinity
    assert pod["priorityClassName"] == "airflow-infra"
    assert _container(_build(spec))["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    bare = _build(_spec())["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert key not in bare
    assert "resources" not in _container(_build(_spec()))


@pytest.mark.parametrize(
    ("worker", "default", "expected"),
    [
        (None, "op/image:1", "op/image:1"),
        ({"image": "custom/worker:2"}, "op/image:1", "custom/worker:2"),
        ({"image": "custom/worker:2"}, None, "custom/worker:2"),
        (None, None, None),
    ],
)
def test_image_from_spec_or_operator_setting(
    worker: dict[str, str] | None, default: str | None, expected: str | None
) -> None:
    spec = _spec(worker=worker) if worker else _spec()
    assert deployment.resolve_image(spec, default=default) == expected


def test_secret_key_uses_cover_env_and_files_once_each() -> None:
    uses = credentials.secret_key_uses(_full())
    pairs = [(u.secret_name, u.key) for u in uses]
    assert len(pairs) == len(set(pairs)) == 11
    assert ("kafka-ca", "ca.crt") in pairs
    assert ("legacy-airflow-poke", "poke-token") in pairs
    assert credentials.secret_names(_full()) == sorted({p[0] for p in pairs})


def test_a_normal_start_meets_no_failing_probe() -> None:
    """The startup probe asks the liveness endpoint (up as soon as the process is), only after
    a start has had time; readiness waits for it and for the first poll."""
    owner = naming.Owner(name="orders", namespace="data", uid="u1")
    sync_spec = api.SyncSpec.model_validate(
        {"source": {"url": "http://a:8080"}, "targets": [{"name": "b", "url": "http://b:8080"}]}
    )
    body = deployment.worker_deployment(owner=owner, spec=sync_spec, image="img:1")
    (container,) = body["spec"]["template"]["spec"]["containers"]
    startup, ready = container["startupProbe"], container["readinessProbe"]
    assert startup["httpGet"]["path"] == naming.HEALTHZ_PATH  # never restarts on a down source
    assert startup["initialDelaySeconds"] >= 3
    assert ready["initialDelaySeconds"] > startup["initialDelaySeconds"]
    # Startup allows at least 30 s before the kubelet gives up on the process.
    assert (
        startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"]
        >= 30
    )
