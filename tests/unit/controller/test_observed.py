"""The watches' fingerprints of children, the applied-hash, and the resync's Secret reads."""

from __future__ import annotations

from airflow_asset_sync.clients import kube
from airflow_asset_sync.controller import observed
from airflow_asset_sync.resources import fingerprint, naming
from support.fake_kube import FakeKube

OWNER = "sync-1"


def _child(**meta: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "orders-worker",
            "namespace": "data",
            "ownerReferences": [{"controller": True, "uid": OWNER}],
            **meta,
        },
    }


def test_the_applied_hash_ignores_itself_and_follows_everything_else() -> None:
    body = _child()
    stamped = fingerprint.stamped(body)
    assert fingerprint.hash_of(stamped) == fingerprint.applied_hash(body)
    assert fingerprint.applied_hash(stamped) == fingerprint.applied_hash(body)
    assert fingerprint.stamped(stamped) == stamped
    relabelled = _child(labels={"team": "b"})
    assert fingerprint.applied_hash(relabelled) != fingerprint.applied_hash(body)
    assert "annotations" not in body["metadata"]  # type: ignore[operator]


def test_a_child_is_as_applied_only_under_its_owner_with_the_hash_and_no_other_writer() -> None:
    desired = fingerprint.stamped(_child())
    digest = fingerprint.hash_of(desired) or ""
    seen = observed.seen_child(desired, field_manager=kube.OPERATOR_FIELD_MANAGER)
    assert seen.as_applied(owner_uid=OWNER, desired_hash=digest)
    assert not seen.as_applied(owner_uid="someone-else", desired_hash=digest)
    assert not seen.as_applied(owner_uid=OWNER, desired_hash="another-spec")
    edited = fingerprint.stamped(
        _child(managedFields=[{"manager": "kubectl-edit", "time": "2024-05-01T00:00:00Z"}])
    )
    by_person = observed.seen_child(edited, field_manager=kube.OPERATOR_FIELD_MANAGER)
    assert not by_person.as_applied(owner_uid=OWNER, desired_hash=digest)


def test_observed_children_record_replace_and_forget() -> None:
    children = observed.ObservedChildren()
    body = fingerprint.stamped(_child())
    children.record(body)
    assert children("ServiceAccount", "data", "orders-worker") is not None
    assert children("ServiceAccount", "data", "other") is None
    children.record(body, deleted=True)
    assert children("ServiceAccount", "data", "orders-worker") is None
    assert len(children) == 0
    assert naming.APPLIED_HASH_ANNOTATION in body["metadata"]["annotations"]


def test_deployment_fingerprint_carries_its_rollout_state() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "w", "namespace": "data", "generation": 2},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1},
    }
    seen = observed.seen_child(deployment, field_manager=kube.OPERATOR_FIELD_MANAGER)
    assert seen.worker is not None
    assert "observed by its controller" in seen.worker.message


def test_secrets_seen_recently_reads_each_once_per_max_age() -> None:
    fake = FakeKube()
    fake.add_secret(namespace="data", name="creds", keys={"password": "p"})
    clock = [0.0]
    reads = observed.SecretsSeenRecently(fake, max_age_seconds=30.0, clock=lambda: clock[0])
    first = reads.read_secret(namespace="data", name="creds")
    assert reads.read_secret(namespace="data", name="creds") == first
    assert reads.read_secret(namespace="data", name="missing") is None
    assert reads.read_secret(namespace="data", name="missing") is None
    assert fake.calls == [("get", "Secret", "creds"), ("get", "Secret", "missing")]
    fake.add_secret(namespace="data", name="creds", keys={"password": "q"}, version="2")
    clock[0] = 30.0
    again = reads.read_secret(namespace="data", name="creds")
    assert again is not None
    assert again.resource_version == "2"


def test_an_event_older_than_the_operators_own_apply_is_ignored() -> None:
    children = observed.ObservedChildren()
    applied = fingerprint.stamped(_child(resourceVersion="12"))
    children.record(applied)
    late = _child(resourceVersion="9")  # an earlier change's event, delivered after
    children.record(late)
    seen = children("ServiceAccount", "data", "orders-worker")
    assert seen is not None
    assert seen.resource_version == "12"
    assert seen.applied_hash == fingerprint.hash_of(applied)


def test_a_synced_copy_keeps_only_what_the_conditions_need() -> None:
    syncs = observed.ObservedSyncs()
    body = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {
            "name": "s",
            "namespace": "data",
            "uid": "u1",
            "generation": 2,
            "resourceVersion": "7",
            "annotations": {"kopf": "x" * 1000},
            "managedFields": [{"manager": "kopf"}],
        },
        "spec": {"suspend": True, "source": {"url": "http://a"}},
        "status": {
            "observedGeneration": 2,
            "conditions": [],
            "lagSeconds": 3.0,
            "source": {"checkpoint": {"ts": "x"}, "failure": {"component": "Source"}},
            "targets": [
                {"name": "a", "parked": [{"event": "x" * 1000}]},
                {"name": "b", "failure": {"component": "Target"}, "parked": []},
            ],
        },
    }
    syncs.record(body)
    kept = syncs("u1")
    assert kept == {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {
            "name": "s",
            "namespace": "data",
            "uid": "u1",
            "generation": 2,
            "resourceVersion": "7",
        },
        "spec": {"suspend": True},
        "status": {
            "observedGeneration": 2,
            "conditions": [],
            "source": {"failure": {"component": "Source"}},
            "targets": [{"name": "b", "failure": {"component": "Target"}}],
        },
    }
    syncs.record(body, deleted=True)
    assert syncs("u1") is None


def test_a_synced_copy_is_never_replaced_by_an_older_version() -> None:
    """The operator records its own status write at once; the watch events of versions
    before it may still come, and must not take the copy back in time."""
    syncs = observed.ObservedSyncs()
    meta = {"name": "s", "namespace": "n", "uid": "u1"}
    syncs.record({"metadata": {**meta, "resourceVersion": "7"}, "status": {"conditions": [1]}})
    syncs.record({"metadata": {**meta, "resourceVersion": "5"}, "status": {"conditions": [0]}})
    kept = syncs("u1")
    assert kept is not None
    assert kept["metadata"]["resourceVersion"] == "7"
    syncs.record({"metadata": {**meta, "resourceVersion": "9"}, "status": {}})
    kept = syncs("u1")
    assert kept is not None and kept["metadata"]["resourceVersion"] == "9"
