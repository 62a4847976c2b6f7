"""The reconcile steps against an in-memory API (support.fake_kube)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.clients import kube
from airflow_asset_sync.controller import conditions, reconcile
from airflow_asset_sync.controller.conditions import Reason
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.resources import naming
from support.fake_kube import FakeKube

NS = "data"
NAME = "orders"
CHILD = "orders-worker"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KINDS = ["ServiceAccount", "Role", "RoleBinding", "Deployment"]


def _spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"url": "http://a:8080", "auth": {"basic": {"secretName": "a-creds"}}},
        "targets": [
            {"name": "b", "url": "http://b:8080", "auth": {"token": {"secretName": "b-tok"}}}
        ],
    }
    spec.update(changes)
    return spec


@pytest.fixture
def fake() -> FakeKube:
    fake = FakeKube()
    fake.add_secret(namespace=NS, name="a-creds", keys={"username": "u", "password": "p"})
    fake.add_secret(namespace=NS, name="b-tok", keys={"token": "t"})
    fake.add_sync(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": NAME, "namespace": NS, "uid": "sync-1", "generation": 1},
            "spec": _spec(),
        }
    )
    return fake


def _ctx(fake: FakeKube, image: str | None = "op/worker:1") -> reconcile.Context:
    return reconcile.Context(kube=fake, config=OperatorConfig(worker_image=image), now=lambda: NOW)


def _body(fake: FakeKube) -> dict[str, Any]:
    body = fake.get_sync(namespace=NS, name=NAME)
    assert body is not None
    return body


def _edit_spec(fake: FakeKube, **changes: Any) -> None:
    obj = fake.objects[(api.KIND, NS, NAME)]
    obj["spec"] = _spec(**changes)
    obj["metadata"]["generation"] += 1


def _run(fake: FakeKube, **ctx: Any) -> reconcile.Result:
    """One reconcile, its status written back as kopf would (a merge patch of our keys)."""
    result = reconcile.reconcile(body=_body(fake), ctx=_ctx(fake, **ctx))
    if result.status_changed:
        fake.patch_sync_status(namespace=NS, name=NAME, status=result.status)
    return result


def _conditions(fake: FakeKube) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in _body(fake)["status"]["conditions"]}


def test_first_reconcile_creates_the_children_owned_by_the_sync(fake: FakeKube) -> None:
    result = _run(fake)
    assert result.problem is None
    assert [e.message for e in result.events] == [
        f"Created ServiceAccount, Role, RoleBinding and Deployment {CHILD}"
    ]
    for kind in KINDS:
        obj = fake.find(kind, NS, CHILD)
        assert obj is not None, kind
        assert reconcile.controller_uid(obj) == "sync-1"
    deployment = fake.find("Deployment", NS, CHILD)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "op/worker:1"
    assert result.status["observedGeneration"] == 1
    conds = _conditions(fake)
    assert conds["Ready"]["status"] == "Unknown"
    assert conds["Reconciling"]["reason"] == "Progressing"


def test_a_second_reconcile_is_quiet(fake: FakeKube) -> None:
    _run(fake)
    again = _run(fake)
    assert again.events == []
    assert not again.status_changed


def test_ready_once_the_worker_rolls_out(fake: FakeKube) -> None:
    _run(fake)
    fake.roll_out(namespace=NS, name=CHILD)
    result = _run(fake)
    assert result.status_changed
    conds = _conditions(fake)
    assert set(conds) == {"Ready"}
    assert conds["Ready"]["status"] == "True"
    assert conds["Ready"]["reason"] == "WorkerAvailable"


def test_status_keys_are_only_the_operators(fake: FakeKube) -> None:
    fake.patch_sync_status(
        namespace=NS,
        name=NAME,
        status={"source": {"eventsPublished": 5}, "targets": [{"name": "b"}]},
    )
    result = _run(fake)
    assert set(result.status) == {"observedGeneration", "conditions"}
    status = _body(fake)["status"]
    assert status["source"] == {"eventsPublished": 5}
    assert status["targets"] == [{"name": "b"}]


def test_missing_secret_waits_without_touching_the_worker(fake: FakeKube) -> None:
    del fake.secrets[(NS, "b-tok")]
    result = _run(fake)
    assert result.problem is not None
    assert result.problem.reason == Reason.SECRET_NOT_FOUND
    assert not result.problem.stalled
    assert (
        result.problem.message
        == 'Secret "b-tok" not found (referenced by spec.targets[0].auth.token)'
    )
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "SecretNotFound")]
    assert not any(verb == "apply" for verb, _, _ in fake.calls)
    conds = _conditions(fake)
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["message"] == result.problem.message
    assert conds["Reconciling"]["reason"] == "SecretNotFound"
    # The same problem again: status unchanged, no second Warning event.
    again = _run(fake)
    assert again.events == []
    assert not again.status_changed


def test_missing_key_names_secret_key_and_field(fake: FakeKube) -> None:
    fake.add_secret(namespace=NS, name="a-creds", keys={"username": "u"})
    result = _run(fake)
    assert result.problem is not None
    assert result.problem.reason == Reason.SECRET_KEY_NOT_FOUND
    assert result.problem.message == (
        'Secret "a-creds" has no key "password" (referenced by spec.source.auth.basic)'
    )


def test_secret_appearing_later_recovers(fake: FakeKube) -> None:
    secret = fake.secrets.pop((NS, "a-creds"))
    assert _run(fake).problem is not None
    fake.secrets[(NS, "a-creds")] = secret
    result = _run(fake)
    assert result.problem is None
    assert "Reconciling" in _conditions(fake)
    assert _conditions(fake)["Reconciling"]["reason"] == "Progressing"


def test_invalid_spec_is_stalled_and_names_the_field(fake: FakeKube) -> None:
    # A regex the CRD cannot check: Python's `re` rejects it.
    _edit_spec(
        fake,
        targets=[{"name": "b", "url": "http://b:8080", "rewrite": [{"match": "(", "replace": ""}]}],
    )
    result = _run(fake)
    assert result.problem is not None
    assert result.problem.reason == Reason.INVALID_SPEC
    assert result.problem.stalled
    assert "spec.targets[0].rewrite[0].match" in result.problem.message
    assert not any(verb == "apply" or kind == "Secret" for verb, kind, _ in fake.calls)
    conds = _conditions(fake)
    assert conds["Stalled"]["reason"] == "InvalidSpec"
    assert conds["Ready"]["observedGeneration"] == 2


def test_no_worker_image_is_stalled(fake: FakeKube) -> None:
    result = _run(fake, image=None)
    assert result.problem is not None
    assert result.problem.reason == Reason.WORKER_IMAGE_UNSET
    assert result.problem.stalled


def test_spec_worker_image_overrides_the_operator_setting(fake: FakeKube) -> None:
    _edit_spec(fake, worker={"image": "custom/worker:9"})
    assert _run(fake, image=None).problem is None
    deployment = fake.find("Deployment", NS, CHILD)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "custom/worker:9"


def test_child_owned_by_someone_else_is_not_taken_over(fake: FakeKube) -> None:
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": CHILD,
            "namespace": NS,
            "uid": "d-9",
            "ownerReferences": [{"kind": "Other", "name": "x", "uid": "other", "controller": True}],
        },
        "spec": {"replicas": 3},
    }
    fake.put(foreign)
    result = _run(fake)
    assert result.problem is not None
    assert result.problem.reason == Reason.CHILD_CONFLICT
    assert result.problem.stalled
    assert "Deployment orders-worker" in result.problem.message
    kept = fake.find("Deployment", NS, CHILD)
    assert kept is not None
    assert kept["spec"] == {"replicas": 3}


def test_child_without_controller_is_adopted(fake: FakeKube) -> None:
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": CHILD, "namespace": NS, "uid": "sa-1"},
        }
    )
    result = _run(fake)
    assert result.problem is None
    assert f"Updated ServiceAccount {CHILD}" in [e.message for e in result.events]
    sa = fake.find("ServiceAccount", NS, CHILD)
    assert sa is not None
    assert reconcile.controller_uid(sa) == "sync-1"


def test_deleted_child_is_put_back(fake: FakeKube) -> None:
    _run(fake)
    del fake.objects[("Role", NS, CHILD)]
    result = _run(fake)
    assert [e.message for e in result.events] == [f"Created Role {CHILD}"]
    assert fake.find("Role", NS, CHILD) is not None


def test_edited_child_is_restored(fake: FakeKube) -> None:
    _run(fake)
    fake.objects[("Deployment", NS, CHILD)]["spec"]["replicas"] = 5
    result = _run(fake)
    assert [e.message for e in result.events] == [f"Updated Deployment {CHILD}"]
    deployment = fake.find("Deployment", NS, CHILD)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1


def test_spec_change_rolls_the_worker(fake: FakeKube) -> None:
    _run(fake)
    before = fake.find("Deployment", NS, CHILD)
    _edit_spec(fake, pollInterval="5s")
    result = _run(fake)
    after = fake.find("Deployment", NS, CHILD)
    assert before is not None
    assert after is not None
    hash_key = naming.SPEC_HASH_ANNOTATION
    assert (
        before["spec"]["template"]["metadata"]["annotations"][hash_key]
        != (after["spec"]["template"]["metadata"]["annotations"][hash_key])
    )
    assert result.status["observedGeneration"] == 2


def test_rotated_secret_rolls_the_worker(fake: FakeKube) -> None:
    _run(fake)
    fake.add_secret(namespace=NS, name="b-tok", keys={"token": "new"}, version="2")
    result = _run(fake)
    assert [e.message for e in result.events] == [f"Updated Deployment {CHILD}"]


def test_suspend_scales_to_zero_and_pauses(fake: FakeKube) -> None:
    _run(fake)
    _edit_spec(fake, suspend=True)
    result = _run(fake)
    assert result.problem is None
    deployment = fake.find("Deployment", NS, CHILD)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 0
    conds = _conditions(fake)
    assert conds["Paused"]["status"] == "True"
    assert conds["Ready"]["reason"] == "Suspended"


@pytest.mark.parametrize(
    ("status", "stalled"), [(503, False), (None, False), (403, True), (422, True)]
)
def test_api_errors_are_waiting_or_stalled(
    fake: FakeKube, status: int | None, stalled: bool
) -> None:
    fake.failures[("apply", "Deployment")] = kube.KubeError("apply failed", status=status)
    result = _run(fake)
    assert result.problem is not None
    assert result.problem.reason == Reason.KUBERNETES_API_ERROR
    assert result.problem.stalled is stalled


# --- refresh from Deployment events ------------------------------------------------------


def _refresh(fake: FakeKube, deployment: dict[str, Any] | None, uid: str = "sync-1") -> bool:
    """True when the refresh wrote status."""
    refreshed = reconcile.refresh_from_deployment(
        kube_api=fake,
        worker=conditions.worker_state(deployment),
        namespace=NS,
        owner_name=NAME,
        owner_uid=uid,
        now=NOW,
    )
    return refreshed is not None


def test_refresh_turns_ready_when_the_pod_is_ready(fake: FakeKube) -> None:
    _run(fake)
    deployment = fake.roll_out(namespace=NS, name=CHILD)
    assert reconcile.owning_sync(deployment) == (NAME, "sync-1")
    assert _refresh(fake, deployment)
    assert _conditions(fake)["Ready"]["status"] == "True"
    assert not _refresh(fake, deployment), "no change, no write"


def test_refresh_reports_a_deleted_worker(fake: FakeKube) -> None:
    _run(fake)
    _refresh(fake, fake.roll_out(namespace=NS, name=CHILD))
    assert _refresh(fake, None)
    ready = _conditions(fake)["Ready"]
    assert ready["status"] == "Unknown"
    assert "does not exist" in ready["message"]


def test_refresh_stands_aside_for_problems_and_pending_changes(fake: FakeKube) -> None:
    _run(fake)
    deployment = fake.roll_out(namespace=NS, name=CHILD)
    assert not _refresh(fake, deployment, uid="another-sync")
    _edit_spec(fake, pollInterval="2s")  # generation 2 not yet reconciled
    assert not _refresh(fake, deployment)
    del fake.secrets[(NS, "a-creds")]
    _run(fake)
    assert not _refresh(fake, deployment)
    assert _conditions(fake)["Ready"]["reason"] == "SecretNotFound"


def test_refresh_ignores_a_sync_being_deleted_or_gone(fake: FakeKube) -> None:
    _run(fake)
    deployment = fake.roll_out(namespace=NS, name=CHILD)
    fake.objects[(api.KIND, NS, NAME)]["metadata"]["deletionTimestamp"] = "2024-05-01T00:00:00Z"
    assert not _refresh(fake, deployment)
    del fake.objects[(api.KIND, NS, NAME)]
    assert not _refresh(fake, deployment)


def test_owning_sync_ignores_other_owners() -> None:
    assert reconcile.owning_sync({"metadata": {}}) is None
    other = {
        "metadata": {
            "ownerReferences": [
                {
                    "kind": "ReplicaSet",
                    "apiVersion": "apps/v1",
                    "name": "x",
                    "uid": "1",
                    "controller": True,
                }
            ]
        }
    }
    assert reconcile.owning_sync(other) is None


# --- events on transitions, children changed by others --------------------------------------


def test_ready_transitions_are_announced_once(fake: FakeKube) -> None:
    _run(fake)
    fake.roll_out(namespace=NS, name=CHILD)
    became_ready = _run(fake)
    assert [(e.type, e.reason) for e in became_ready.events] == [("Normal", "WorkerAvailable")]
    assert _run(fake).events == []
    fake.roll_out(namespace=NS, name=CHILD, ready=False)
    fake.objects[("Deployment", NS, CHILD)]["status"]["conditions"][1]["reason"] = (
        "NewReplicaSetAvailable"
    )
    unready = _run(fake)
    assert [(e.type, e.reason) for e in unready.events] == [("Warning", "WorkerUnavailable")]
    _edit_spec(fake, suspend=True)
    suspended = _run(fake)
    assert ("Normal", "Suspended") in [(e.type, e.reason) for e in suspended.events]


def test_problems_are_not_announced_twice(fake: FakeKube) -> None:
    del fake.secrets[(NS, "b-tok")]
    result = _run(fake)
    # The problem's own Warning, not a second one for the Ready transition.
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "SecretNotFound")]


def _managed(*entries: tuple[str, str, str | None]) -> dict[str, Any]:
    return {
        "metadata": {
            "managedFields": [
                {"manager": m, "time": t, **({"subresource": sub} if sub else {})}
                for m, t, sub in entries
            ]
        }
    }


def test_changed_by_others_reads_managed_fields() -> None:
    ours = kube.OPERATOR_FIELD_MANAGER
    t0, t1 = "2024-05-01T00:00:00Z", "2024-05-01T00:00:09Z"
    changed = reconcile.changed_by_others
    assert not changed({"metadata": {}}, field_manager=ours)
    assert not changed(_managed((ours, t1, None)), field_manager=ours)
    assert changed(_managed((ours, t0, None), ("kubectl-edit", t1, None)), field_manager=ours)
    assert changed(_managed((ours, t0, None), ("kubectl", t1, "scale")), field_manager=ours)
    # The API server stamps no time on writes through the scale subresource.
    untimed = _managed((ours, t1, None))
    untimed["metadata"]["managedFields"].append({"manager": "kubectl", "subresource": "scale"})
    assert changed(untimed, field_manager=ours)
    # The Deployment controller's status writes are not edits.
    assert not changed(
        _managed((ours, t0, None), ("kube-controller-manager", t1, "status")), field_manager=ours
    )
    # Our later apply took the fields back: settled.
    assert not changed(_managed(("kubectl-edit", t0, None), (ours, t1, None)), field_manager=ours)


# --- failures the worker reports in status ---------------------------------------------------


def _worker_reports(fake: FakeKube, failure: dict[str, Any] | None) -> None:
    status = fake.objects[(api.KIND, NS, NAME)].setdefault("status", {})
    status["targets"] = [{"name": "b", **({"failure": failure} if failure else {})}]


def test_a_worker_failure_turns_ready_false_at_once_and_clears_when_it_does(
    fake: FakeKube,
) -> None:
    _run(fake)
    _refresh(fake, fake.roll_out(namespace=NS, name=CHILD))
    assert not reconcile.worker_report_changed(_body(fake)), "nothing reported yet"
    _worker_reports(
        fake,
        {
            "component": "Target",
            "kind": "AuthFailed",
            "retriable": False,
            "message": "login refused",
            "since": "2024-05-01T11:59:00Z",
        },
    )
    assert reconcile.worker_report_changed(_body(fake))
    refreshed = reconcile.refresh_from_worker(kube_api=fake, sync=_body(fake), now=NOW)
    assert refreshed is not None
    conds = _conditions(fake)
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == "TargetAuthFailed"
    assert conds["Stalled"]["reason"] == "TargetAuthFailed"
    assert [(e.type, e.reason) for e in refreshed.events] == [("Warning", "TargetAuthFailed")]
    assert not reconcile.worker_report_changed(_body(fake)), "shown: no more API calls"
    # The periodic reconcile agrees (it reads the same report).
    assert not _run(fake).status_changed
    _worker_reports(fake, None)
    assert reconcile.worker_report_changed(_body(fake))
    assert reconcile.refresh_from_worker(kube_api=fake, sync=_body(fake), now=NOW) is not None
    assert _conditions(fake)["Ready"]["reason"] == "WorkerAvailable"
    assert "Stalled" not in _conditions(fake)


def _worker_finds_gap(fake: FakeKube, detected_at: str, gaps: int) -> None:
    status = fake.objects[(api.KIND, NS, NAME)].setdefault("status", {})
    status["source"] = {
        "gaps": gaps,
        "lastGap": {
            "detectedAt": detected_at,
            "after": "2024-05-01T11:00:00Z",
            "oldestEventTime": "2024-05-01T11:30:00Z",
            "message": "the source's oldest event is from 2024-05-01T11:30:00Z, after ...",
        },
    }


def test_a_gap_the_worker_found_is_a_warning_once_and_events_lost_without_touching_ready(
    fake: FakeKube,
) -> None:
    _run(fake)
    _refresh(fake, fake.roll_out(namespace=NS, name=CHILD))
    _worker_finds_gap(fake, "2024-05-01T11:59:00Z", 1)
    assert reconcile.worker_report_changed(_body(fake))
    refreshed = reconcile.refresh_from_worker(kube_api=fake, sync=_body(fake), now=NOW)
    assert refreshed is not None
    conds = _conditions(fake)
    assert conds["Ready"]["reason"] == "WorkerAvailable"  # the sync works on
    lost = conds["EventsLost"]
    assert (lost["status"], lost["reason"]) == ("True", "SourceEventsPurged")
    assert lost["message"].startswith("Found 2024-05-01T11:59:00Z: the source's oldest event")
    assert "What to do:" in lost["message"]
    assert [(e.type, e.reason) for e in refreshed.events] == [("Warning", "SourceEventsPurged")]
    assert not reconcile.worker_report_changed(_body(fake)), "shown: no second Warning"
    assert not _run(fake).status_changed
    # A second gap: a new message, a new Warning.
    _worker_finds_gap(fake, "2024-05-01T12:30:00Z", 2)
    assert reconcile.worker_report_changed(_body(fake))
    again = reconcile.refresh_from_worker(kube_api=fake, sync=_body(fake), now=NOW)
    assert again is not None
    assert [(e.type, e.reason) for e in again.events] == [("Warning", "SourceEventsPurged")]
    assert "2 gaps so far" in _conditions(fake)["EventsLost"]["message"]


# --- spec.source.push: the worker Service, the poke token's env, status.pokeUrl -----------

URL = f"http://{CHILD}.{NS}.svc:8080/poke"
PUSH = {"token": {"secretName": "poke", "key": "tok"}}


def _push_source(**push: Any) -> dict[str, Any]:
    source: dict[str, Any] = dict(_spec()["source"])
    if push:
        source["push"] = push
    return source


def _with_push(fake: FakeKube) -> None:
    fake.add_secret(namespace=NS, name="poke", keys={"tok": "s3cret"})
    _edit_spec(fake, source=_push_source(**PUSH))


def test_push_adds_a_service_for_the_worker_and_reports_the_poke_url(fake: FakeKube) -> None:
    _with_push(fake)
    result = _run(fake)
    assert result.problem is None
    assert [e.message for e in result.events] == [
        f"Created ServiceAccount, Role, RoleBinding, Deployment and Service {CHILD}"
    ]
    service = fake.find("Service", NS, CHILD)
    deployment = fake.find("Deployment", NS, CHILD)
    assert service is not None and deployment is not None
    pod = deployment["spec"]["template"]
    # It selects the worker pod, on the port the worker serves /poke on, by name.
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    (container,) = pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert port["port"] == 8080
    assert service["metadata"]["ownerReferences"][0]["uid"] == "sync-1"
    assert _body(fake)["status"]["pokeUrl"] == URL
    # The token reaches the worker from its Secret, never as a value in the Deployment.
    env = {e["name"]: e for e in container["env"]}
    assert env["AAS_POKE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "poke",
        "key": "tok",
        "optional": False,
    }
    assert "s3cret" not in str(deployment) + str(service) + str(_body(fake)["status"])


def test_a_second_reconcile_writes_no_poke_url_again(fake: FakeKube) -> None:
    _with_push(fake)
    _run(fake)
    fake.calls.clear()
    again = _run(fake)
    assert again.events == []
    assert ("patch-status", api.KIND, NAME) not in fake.calls


def test_a_missing_token_secret_is_reported_by_its_field(fake: FakeKube) -> None:
    _edit_spec(fake, source=_push_source(**PUSH))
    result = _run(fake)
    assert result.problem is not None
    assert result.problem.reason == "SecretNotFound"
    assert "spec.source.push.token" in result.problem.message
    assert fake.find("Service", NS, CHILD) is None


def test_removing_push_deletes_the_service_and_the_poke_url(fake: FakeKube) -> None:
    _with_push(fake)
    _run(fake)
    _edit_spec(fake, source=_push_source())
    result = _run(fake)
    assert f"Deleted Service {CHILD}" in [e.message for e in result.events]
    assert fake.find("Service", NS, CHILD) is None
    assert _body(fake)["status"].get("pokeUrl") is None
    assert fake.find("Deployment", NS, CHILD) is not None


def test_a_service_of_another_owner_is_neither_deleted_nor_taken_over(fake: FakeKube) -> None:
    other = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": CHILD,
            "namespace": NS,
            "ownerReferences": [{"controller": True, "uid": "someone-else"}],
        },
        "spec": {},
    }
    fake.apply(other)
    _run(fake)  # no push: not ours to delete
    assert fake.find("Service", NS, CHILD) is not None
    _with_push(fake)
    result = _run(fake)
    assert result.problem is not None
    assert result.problem.reason == "ChildConflict"
