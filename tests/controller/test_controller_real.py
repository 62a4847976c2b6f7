"""The operator as a real process against the rig's real kube-apiserver.

One cluster-wide operator process serves this module (a restart test stops and starts it);
each test works in a namespace of its own. The operator runs under an identity holding
exactly `rbac.operator_rules()`, so a missing permission fails here as it would in a cluster.

The bare API server runs no controllers: nothing turns a Deployment into pods and nothing
garbage-collects owned objects. Tests act as the Deployment controller by writing a
Deployment's status through its status subresource. Deleting a sync leaves its children here
(the operator deletes none when a sync goes, holds no finalizer, and leaves them to the
garbage collector through their owner references): tests assert those references instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.api.status import SourceGap, SourceStatus
from airflow_asset_sync.clients import kube as kube_client
from airflow_asset_sync.resources import naming, rbac
from airflow_asset_sync.worker.status_store import StatusOffsetStore
from rig.kube import KubeRig
from support import crd, live
from support.live import condition, get, wait_for

pytestmark = pytest.mark.rig

KINDS = ("serviceaccount", "role", "rolebinding", "deployment")


@pytest.fixture(scope="module")
def operator(operator_rbac: KubeRig) -> Iterator[live.OperatorProcess]:
    kubeconfig = live.operator_identity(operator_rbac, name="operator-main")
    proc = live.OperatorProcess(operator_rbac, name="main", kubeconfig=kubeconfig)
    proc.start()
    try:
        yield proc
    finally:
        # Leave no finalizer behind for a later module's operator (or none) to trip over.
        if proc.running:
            operator_rbac.kubectl("delete", "aas", "--all", "-A", "--timeout=60s", check=False)
        proc.stop()


@pytest.fixture
def ns(request: pytest.FixtureRequest, sync_crd: KubeRig) -> str:
    """A namespace per test, named after it. Short: a client certificate's CN (the user name
    `system:serviceaccount:<ns>:<name>`) holds at most 64 characters."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.removeprefix("test_").lower())
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:5]
    return live.create_namespace(sync_crd, f"c-{name[:14].rstrip('-')}-{digest}")


def _sync(kube: KubeRig, ns: str, name: str) -> dict[str, Any]:
    obj = get(kube, api.PLURAL, name, ns)
    assert obj is not None, f"{api.KIND} {ns}/{name} is gone"
    return obj


def _children(kube: KubeRig, ns: str, name: str) -> dict[str, dict[str, Any] | None]:
    child = naming.worker_name(name)
    return {kind: get(kube, kind, child, ns) for kind in KINDS}


def _wait_children(kube: KubeRig, ns: str, name: str, timeout_s: float = 30) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        children = _children(kube, ns, name)
        return children if all(children.values()) else None

    return wait_for(probe, what=f"children of {ns}/{name}", timeout_s=timeout_s)


def _wait_ready(kube: KubeRig, ns: str, name: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = _sync(kube, ns, name)
        ready = condition(obj, "Ready")
        assert ready is not None and ready["status"] == status, ready
        return obj

    return wait_for(probe, what=f"Ready={status} on {ns}/{name}")


def _with_secrets(kube: KubeRig, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    """Apply a sync whose source and target use password auth from two Secrets."""
    live.apply(
        kube,
        live.secret(f"{name}-a", username="u", password="p"),
        live.secret(f"{name}-b", username="u", password="p"),
        namespace=ns,
    )
    manifest = live.sync_manifest(
        name, source_secret=f"{name}-a", target_secret=f"{name}-b", **spec
    )
    live.apply(kube, manifest, namespace=ns)
    return manifest


def _template_hash(deploy: dict[str, Any]) -> str:
    return str(deploy["spec"]["template"]["metadata"]["annotations"][naming.SPEC_HASH_ANNOTATION])


# --- creation, owner references, RBAC -----------------------------------------------------


def test_children_are_created_with_owner_references(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "orders")
    children = _wait_children(kube, ns, "orders")
    sync = _sync(kube, ns, "orders")
    for kind, child in children.items():
        assert child is not None
        refs = child["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": "orders",
                "uid": sync["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], kind
        assert child["metadata"]["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGED_BY

    deploy = children["deployment"]
    assert deploy is not None
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == naming.worker_name("orders")
    container = pod["containers"][0]
    assert container["image"] == live.WORKER_IMAGE
    assert container["args"] == ["worker", "--namespace", ns, "--name", "orders"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["AAS_SOURCE_PASSWORD"] == {"name": "orders-a", "key": "password", "optional": False}
    assert refs["AAS_TARGET_B_USERNAME"]["name"] == "orders-b"

    role = children["role"]
    assert role is not None
    assert role["rules"] == rbac.worker_rules("orders")
    binding = children["rolebinding"]
    assert binding is not None
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": naming.worker_name("orders"), "namespace": ns}
    ]

    # One Created event on the sync, naming every child (the apply's 201 said so).
    def created() -> list[str] | None:
        reasons = [e["message"] for e in live.events_for(kube, ns, api.KIND, "orders")]
        return [r for r in reasons if r.startswith("Created ")] or None

    messages = wait_for(created, what="the Created event")
    assert messages == [
        f"Created ServiceAccount, Role, RoleBinding and Deployment {naming.worker_name('orders')}"
    ]


def test_worker_rbac_is_exactly_its_own_object(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "rbac")
    _with_secrets(kube, ns, "other")
    _wait_children(kube, ns, "rbac")
    sa = f"system:serviceaccount:{ns}:{naming.worker_name('rbac')}"

    def can(*args: str) -> bool:
        result = kube.kubectl("auth", "can-i", *args, "-n", ns, f"--as={sa}", check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"

    own = f"{api.PLURAL}.{api.GROUP}/rbac"
    other = f"{api.PLURAL}.{api.GROUP}/other"
    assert can("get", own)
    assert can("watch", own)
    assert can("patch", own, "--subresource=status")
    assert not can("patch", own)  # the spec
    assert not can("update", own)
    assert not can("delete", own)
    assert not can("list", f"{api.PLURAL}.{api.GROUP}")
    assert not can("get", other)
    assert not can("patch", other, "--subresource=status")
    assert not can("get", "secrets")
    assert not can("get", "secrets/rbac-a")
    assert not can("list", "secrets")
    assert not can("create", "events")
    assert not can("get", "configmaps")

    # The same, for real, as the ServiceAccount itself (a client certificate for it).
    kubeconfig = kube.mint_service_account(ns, naming.worker_name("rbac"))
    read = kube.kubectl("get", api.PLURAL, "rbac", "-n", ns, "-o", "json", kubeconfig=kubeconfig)
    assert json.loads(read.stdout)["metadata"]["name"] == "rbac"
    # The worker's own status write: a merge patch through /status with the project's client
    # (kubectl patch would GET /status first, which the worker neither does nor may).
    worker_client = live.kube_client_for(kubeconfig)
    patched = worker_client.patch_sync_status(
        namespace=ns, name="rbac", status={"source": {"eventsPublished": 3}}
    )
    assert patched["status"]["source"] == {"eventsPublished": 3}
    # It cannot widen its own Role either (no RBAC verbs at all).
    with pytest.raises(kube_client.KubeError) as role_write:
        worker_client.apply(
            {**rbac.role(naming.Owner(name="rbac", namespace=ns, uid="x")), "rules": []}
        )
    assert role_write.value.status == 403
    with pytest.raises(kube_client.KubeError) as secret_read:
        worker_client.read_secret(namespace=ns, name="rbac-a")
    assert secret_read.value.status == 403
    for what in (("secret", "rbac-a"), (api.PLURAL, "other"), (api.PLURAL,), ("secrets",)):
        result = kube.kubectl("get", *what, "-n", ns, kubeconfig=kubeconfig, check=False)
        assert result.returncode != 0 and "Forbidden" in result.stderr, (what, result.stderr)
    spec_patch = kube.kubectl(
        "patch",
        api.PLURAL,
        "rbac",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
        kubeconfig=kubeconfig,
        check=False,
    )
    assert spec_patch.returncode != 0 and "Forbidden" in spec_patch.stderr


# --- status, conditions, events, printer columns -------------------------------------------


def test_status_conditions_events_and_columns(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "status")
    # Before any pod: the worker is rolling out.
    sync = _wait_ready(kube, ns, "status", "Unknown")
    assert sync["status"]["observedGeneration"] == sync["metadata"]["generation"]
    ready = condition(sync, "Ready")
    assert ready is not None and ready["reason"] == "Progressing"
    assert condition(sync, "Reconciling") is not None
    assert condition(sync, "Stalled") is None
    assert condition(sync, "Paused") is None

    # Play the Deployment controller: the pod is up.
    live.act_as_deployment_controller(kube, ns, naming.worker_name("status"), ready=True)
    sync = _wait_ready(kube, ns, "status", "True")
    ready = condition(sync, "Ready")
    assert ready is not None and ready["reason"] == "WorkerAvailable"
    assert ready["observedGeneration"] == sync["metadata"]["generation"]
    assert condition(sync, "Reconciling") is None

    table = kube.kubectl("get", "aas", "-n", ns).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "READY", "STATUS"]
    row = table[1].split()
    assert row[:2] == ["status", "True"]
    assert f"Worker {naming.worker_name('status')} is available" in table[1]

    # The pod becomes unready: Ready=False, and a Warning event says so.
    live.act_as_deployment_controller(kube, ns, naming.worker_name("status"), ready=False)
    sync = _wait_ready(kube, ns, "status", "False")
    ready = condition(sync, "Ready")
    assert ready is not None and ready["reason"] == "WorkerUnavailable"

    def transitions() -> list[tuple[str, str]] | None:
        events = [(e["type"], e["reason"]) for e in live.events_for(kube, ns, api.KIND, "status")]
        wanted = [("Normal", "WorkerAvailable"), ("Warning", "WorkerUnavailable")]
        return events if all(w in events for w in wanted) else None

    events = wait_for(transitions, what="events for Ready transitions")
    assert ("Normal", "Created") in events
    for e in live.events_for(kube, ns, api.KIND, "status"):
        assert e["source"]["component"] == "airflow-asset-sync-operator", e


def test_kopf_keeps_its_diff_base_in_status_and_drops_an_earlier_versions_annotation(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    """One PATCH per create: kopf's diff base is a status field, no annotation is written."""
    _with_secrets(kube, ns, "diffbase")

    def stored_in_status() -> dict[str, Any] | None:
        s = _sync(kube, ns, "diffbase")
        return s if s.get("status", {}).get("lastHandledConfiguration") else None

    sync = wait_for(stored_in_status, what="the diff base in status")
    stored = json.loads(sync["status"]["lastHandledConfiguration"])
    assert stored["spec"] == sync["spec"]
    ours = [k for k in sync["metadata"].get("annotations", {}) if k.startswith(api.GROUP)]
    assert ours == [], "kopf wrote annotations"

    # What an earlier version left: its annotation. The next spec change removes it.
    legacy = f"{api.GROUP}/last-handled-configuration"
    old = json.dumps({"spec": sync["spec"]}, separators=(",", ":"))
    patch = {"metadata": {"annotations": {legacy: old}}, "spec": {"pollInterval": "9s"}}
    kube.kubectl("patch", "aas", "diffbase", "-n", ns, "--type=merge", "-p", json.dumps(patch))

    def moved() -> dict[str, Any] | None:
        s = _sync(kube, ns, "diffbase")
        base = json.loads(s.get("status", {}).get("lastHandledConfiguration") or "{}")
        gone = legacy not in s["metadata"].get("annotations", {})
        return s if gone and base.get("spec", {}).get("pollInterval") == "9s" else None

    sync = wait_for(moved, what="the annotation removed and the new spec in the diff base")
    assert sync["status"]["observedGeneration"] == sync["metadata"]["generation"]


def test_a_gap_the_worker_reports_is_events_lost_with_one_warning_per_gap(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "gap")
    _wait_children(kube, ns, "gap")
    live.act_as_deployment_controller(kube, ns, naming.worker_name("gap"), ready=True)
    _wait_ready(kube, ns, "gap", "True")
    # The worker's own write, as its status store sends it (a merge patch of status.source).
    store = StatusOffsetStore(
        live.kube_client_for(kube.kubeconfig), api.ObjectRef(namespace=ns, name="gap")
    )

    def report(gaps: int, found: datetime, **counters: int) -> None:
        gap = SourceGap(
            detected_at=found,
            after=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
            oldest_event_time=datetime(2026, 12, 1, 11, 0, tzinfo=UTC),
            message="the source's oldest event is from 2026-12-01T11:00:00+00:00, after ...",
        )
        asyncio.run(store.save_source(SourceStatus(gaps=gaps, last_gap=gap, **counters)))

    def warnings(count: int) -> list[dict[str, Any]] | None:
        found = [
            e
            for e in live.events_for(kube, ns, api.KIND, "gap")
            if e["reason"] == "SourceEventsPurged"
        ]
        return found if len(found) >= count else None

    def shown() -> dict[str, Any] | None:
        obj = _sync(kube, ns, "gap")
        return obj if condition(obj, "EventsLost") else None

    report(1, datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    sync = wait_for(shown, what="EventsLost")
    lost = condition(sync, "EventsLost")
    assert lost is not None and lost["reason"] == "SourceEventsPurged"
    assert lost["message"].startswith("Found 2026-12-01T12:00:00Z: the source's oldest event")
    ready = condition(sync, "Ready")
    assert ready is not None and ready["status"] == "True"  # the sync works on
    (first,) = wait_for(lambda: warnings(1), what="a Warning for the gap")
    assert first["type"] == "Warning" and "Found 2026-12-01T12:00:00Z" in first["message"]

    # More worker writes with the same gap post nothing; the next gap posts one Warning.
    report(1, datetime(2026, 12, 1, 12, 0, tzinfo=UTC), events_published=5)
    report(2, datetime(2026, 12, 1, 13, 0, tzinfo=UTC), events_published=6)
    both = wait_for(lambda: warnings(2), what="a Warning for the second gap")
    found = sorted(e["message"].split(":", 1)[0] for e in both)
    assert found == ["Found 2026-12-01T12", "Found 2026-12-01T13"], "one Warning per gap"
    lost = condition(_sync(kube, ns, "gap"), "EventsLost")
    assert lost is not None and "2 gaps so far" in lost["message"]


# --- update, suspend / resume ----------------------------------------------------------------


def test_spec_change_rolls_the_worker(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "upd")
    deploy = _wait_children(kube, ns, "upd")["deployment"]
    before = _template_hash(deploy)
    live.act_as_deployment_controller(kube, ns, naming.worker_name("upd"), ready=True)
    _wait_ready(kube, ns, "upd", "True")

    # A status write (the worker's) is not a spec change: nothing rolls.
    kube.kubectl(
        "patch",
        "aas",
        "upd",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"source": {"eventsPublished": 1}}}),
    )
    kube.kubectl(
        "patch", "aas", "upd", "-n", ns, "--type=merge", "-p", '{"spec":{"pollInterval":"5s"}}'
    )

    def rolled() -> dict[str, Any] | None:
        current = get(kube, "deployment", naming.worker_name("upd"), ns)
        return current if current and _template_hash(current) != before else None

    deploy = wait_for(rolled, what="a new spec hash on the pod template")
    assert deploy["metadata"]["generation"] == 2
    sync = _wait_ready(kube, ns, "upd", "Unknown")  # the new pod is not up yet
    assert sync["status"]["observedGeneration"] == sync["metadata"]["generation"] == 2
    assert sync["status"]["source"] == {"eventsPublished": 1}, "the worker's status is kept"
    live.act_as_deployment_controller(kube, ns, naming.worker_name("upd"), ready=True)
    _wait_ready(kube, ns, "upd", "True")

    reasons = [e["message"] for e in live.events_for(kube, ns, api.KIND, "upd")]
    assert f"Updated Deployment {naming.worker_name('upd')}" in reasons


def test_push_creates_the_worker_service_reports_the_poke_url_and_removes_both(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    """`spec.source.push`: a Service the real API server accepts (created under exactly the
    operator's RBAC), selecting the worker pod, and its URL in status; gone with push."""
    live.apply(kube, live.secret("push-poke", token="rig-push-Tok-0b1e"), namespace=ns)
    manifest = _with_secrets(kube, ns, "push")
    manifest["spec"]["source"]["push"] = {"token": {"secretName": "push-poke"}}
    live.apply(kube, manifest, namespace=ns)
    child = naming.worker_name("push")

    def pushed() -> tuple[dict[str, Any], dict[str, Any]] | None:
        service = get(kube, "service", child, ns)
        sync = _sync(kube, ns, "push")
        url = (sync.get("status") or {}).get("pokeUrl")
        return (service, sync) if service is not None and url else None

    service, sync = wait_for(pushed, what="the worker Service and status.pokeUrl")
    assert sync["status"]["pokeUrl"] == f"http://{child}.{ns}.svc:8080/poke"
    assert service["spec"]["clusterIP"]  # allocated: a real ClusterIP Service
    assert service["metadata"]["ownerReferences"][0]["uid"] == sync["metadata"]["uid"]
    deploy = get(kube, "deployment", child, ns)
    assert deploy is not None
    pod = deploy["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["AAS_POKE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "push-poke"
    shown = json.dumps(sync) + json.dumps(live.events_for(kube, ns, api.KIND, "push"))
    assert "rig-push-Tok-0b1e" not in shown

    del manifest["spec"]["source"]["push"]
    live.apply(kube, manifest, namespace=ns)

    def removed() -> dict[str, Any] | None:
        sync = _sync(kube, ns, "push")
        gone = get(kube, "service", child, ns) is None
        return sync if gone and "pokeUrl" not in (sync.get("status") or {}) else None

    wait_for(removed, what="the Service and status.pokeUrl removed with push")
    reasons = [e["message"] for e in live.events_for(kube, ns, api.KIND, "push")]
    assert f"Deleted Service {child}" in reasons
    assert get(kube, "deployment", child, ns) is not None


def test_suspend_scales_to_zero_and_resume_restores(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "pause")
    worker = naming.worker_name("pause")
    deploy = _wait_children(kube, ns, "pause")["deployment"]
    spec_hash = _template_hash(deploy)
    live.act_as_deployment_controller(kube, ns, worker, ready=True)
    _wait_ready(kube, ns, "pause", "True")

    kube.kubectl(
        "patch", "aas", "pause", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )

    def scaled_down() -> dict[str, Any] | None:
        current = get(kube, "deployment", worker, ns)
        return current if current and current["spec"]["replicas"] == 0 else None

    deploy = wait_for(scaled_down, what="replicas 0")
    assert _template_hash(deploy) == spec_hash, "suspend acts through replicas, not a rollout"
    live.act_as_deployment_controller(kube, ns, worker, ready=True)  # 0 of 0 pods

    def paused() -> dict[str, Any] | None:
        sync = _sync(kube, ns, "pause")
        ok = condition(sync, "Paused") is not None and condition(sync, "Reconciling") is None
        return sync if ok else None

    sync = wait_for(paused, what="Paused and settled")
    pause_cond = condition(sync, "Paused")
    ready = condition(sync, "Ready")
    assert pause_cond is not None and pause_cond["status"] == "True"
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "Suspended")
    wide = kube.kubectl("get", "aas", "pause", "-n", ns, "-o", "wide").stdout.splitlines()
    assert "true" in wide[1].split()

    kube.kubectl(
        "patch", "aas", "pause", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )

    def scaled_up() -> dict[str, Any] | None:
        current = get(kube, "deployment", worker, ns)
        return current if current and current["spec"]["replicas"] == 1 else None

    deploy = wait_for(scaled_up, what="replicas 1 again")
    assert _template_hash(deploy) == spec_hash
    live.act_as_deployment_controller(kube, ns, worker, ready=True)
    sync = _wait_ready(kube, ns, "pause", "True")
    assert condition(sync, "Paused") is None


# --- deletion --------------------------------------------------------------------------------


def _wait_sync_gone(kube: KubeRig, ns: str, name: str, timeout_s: float = 30) -> None:
    wait_for(
        lambda: get(kube, api.PLURAL, name, ns) is None,
        what=f"{ns}/{name} deleted",
        timeout_s=timeout_s,
    )


def test_delete_is_not_held_and_children_are_left_to_the_garbage_collector(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "live")
    _with_secrets(kube, ns, "sleepy", suspend=True)
    _wait_children(kube, ns, "live")
    children = _wait_children(kube, ns, "sleepy")
    assert children["deployment"]["spec"]["replicas"] == 0
    sync = _sync(kube, ns, "sleepy")
    assert not sync["metadata"].get("finalizers"), "no finalizer: uninstall must not strand it"
    for kind, child in children.items():
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == (
            api.KIND,
            "sleepy",
            sync["metadata"]["uid"],
        )
        assert ref["controller"] is True and ref["blockOwnerDeletion"] is True, kind

    # Gone at once, operator or not: nothing holds it.
    kube.kubectl("delete", "aas", "live", "sleepy", "-n", ns, "--timeout=15s")
    assert get(kube, api.PLURAL, "sleepy", ns) is None
    # This API server runs no garbage collector, so the children stay (a cluster's deletes
    # them through the owner references above); the operator neither deletes nor re-creates
    # them for a sync that is gone.
    time.sleep(2)
    assert all(_children(kube, ns, "sleepy").values())


# --- children put back -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deployment", "role", "rolebinding", "serviceaccount"])
def test_deleted_child_is_put_back(
    kube: KubeRig, operator: live.OperatorProcess, ns: str, kind: str
) -> None:
    name = f"del-{kind}"
    _with_secrets(kube, ns, name)
    old = _wait_children(kube, ns, name)[kind]
    kube.kubectl("delete", kind, naming.worker_name(name), "-n", ns)

    def recreated() -> dict[str, Any] | None:
        current = get(kube, kind, naming.worker_name(name), ns)
        return current if current and current["metadata"]["uid"] != old["metadata"]["uid"] else None

    # Well before the periodic resync (60 s here): the operator watches its children.
    new = wait_for(recreated, what=f"{kind} put back", timeout_s=20)
    assert new["metadata"]["ownerReferences"][0]["name"] == name


def test_edited_role_is_restored(kube: KubeRig, operator: live.OperatorProcess, ns: str) -> None:
    _with_secrets(kube, ns, "edit")
    worker = naming.worker_name("edit")
    _wait_children(kube, ns, "edit")
    wide = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]
    kube.kubectl(
        "patch", "role", worker, "-n", ns, "--type=merge", "-p", json.dumps({"rules": wide})
    )

    def restored() -> bool:
        role = get(kube, "role", worker, ns)
        return role is not None and role["rules"] == rbac.worker_rules("edit")

    wait_for(restored, what="the Role's rules restored", timeout_s=20)
    sa = f"system:serviceaccount:{ns}:{worker}"
    can = kube.kubectl("auth", "can-i", "get", "secrets", "-n", ns, f"--as={sa}", check=False)
    assert can.stdout.strip() == "no"

    # A widened Deployment (a second replica would mean two pollers) is restored too.
    kube.kubectl("scale", "deployment", worker, "-n", ns, "--replicas=2")

    def one_replica() -> bool:
        deploy = get(kube, "deployment", worker, ns)
        return deploy is not None and deploy["spec"]["replicas"] == 1

    wait_for(one_replica, what="replicas back to 1", timeout_s=20)


# --- a spec that passes the schema but cannot work -------------------------------------------


_FAILED = r"Handler 'reconcile' failed temporarily: {reason}.*object={ns}/{name}"


def test_missing_secret_is_reported_retried_with_backoff_then_converges(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    manifest = live.sync_manifest("nosecret", source_secret="src-creds")
    live.apply(kube, manifest, namespace=ns)

    def reported() -> dict[str, Any] | None:
        sync = _sync(kube, ns, "nosecret")
        ready = condition(sync, "Ready")
        return sync if ready and ready["reason"] == "SecretNotFound" else None

    sync = reported_sync = wait_for(reported, what="Ready=False SecretNotFound")
    ready = condition(sync, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert 'Secret "src-creds" not found' in ready["message"]
    assert "spec.source.auth.password" in ready["message"]
    reconciling = condition(sync, "Reconciling")
    assert reconciling is not None and reconciling["reason"] == "SecretNotFound"
    assert condition(sync, "Stalled") is None, "a Secret may appear: waiting, not stalled"
    assert all(v is None for v in _children(kube, ns, "nosecret").values())

    # Retried with back-off (1 s, 2 s, 4 s here), not in a hot loop: await the third attempt
    # and check the gaps, then count the events.
    pattern = _FAILED.format(reason="SecretNotFound", ns=re.escape(ns), name="nosecret")
    operator.wait_log(pattern, count=3, timeout_s=30)
    stamps = [
        time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        for line in operator.log().splitlines()
        if re.search(pattern, line)
    ]
    assert stamps[2] - stamps[0] >= 2.0, stamps  # 1 s + 2 s apart, give or take rounding
    warnings = [
        e
        for e in live.events_for(kube, ns, api.KIND, "nosecret")
        if e["reason"] == "SecretNotFound"
    ]
    assert len(warnings) == 1, "one Warning per new problem, not one per retry"
    assert warnings[0]["type"] == "Warning"
    assert "src-creds" in warnings[0]["message"]
    total = len(live.events_for(kube, ns, api.KIND, "nosecret"))
    assert total <= 2 + len(stamps), [
        e["message"] for e in live.events_for(kube, ns, api.KIND, "nosecret")
    ]
    assert reported_sync["metadata"]["generation"] == 1

    # The Secret appears without its password key: the condition names the key.
    live.apply(kube, live.secret("src-creds", username="u"), namespace=ns)

    def key_reported() -> dict[str, Any] | None:
        ready = condition(_sync(kube, ns, "nosecret"), "Ready")
        return ready if ready and ready["reason"] == "SecretKeyNotFound" else None

    ready = wait_for(key_reported, what="SecretKeyNotFound", timeout_s=30)
    assert 'Secret "src-creds" has no key "password"' in ready["message"]

    # Fixed: the children appear and the sync rolls out.
    live.apply(kube, live.secret("src-creds", username="u", password="p"), namespace=ns)
    _wait_children(kube, ns, "nosecret", timeout_s=30)
    sync = _wait_ready(kube, ns, "nosecret", "Unknown")
    reconciling = condition(sync, "Reconciling")
    assert reconciling is not None and reconciling["reason"] == "Progressing"


def test_invalid_regex_stalls_with_a_condition_naming_the_field(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    """What the CRD cannot check (a Python regular expression) stalls: a person must act."""
    manifest = live.sync_manifest("badregex", assets={"include": [{"regex": "(unclosed"}]})
    live.apply(kube, manifest, namespace=ns)

    def stalled() -> dict[str, Any] | None:
        return condition(_sync(kube, ns, "badregex"), "Stalled")

    cond = wait_for(stalled, what="Stalled")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.assets.include[0]" in cond["message"]
    ready = condition(_sync(kube, ns, "badregex"), "Ready")
    assert ready is not None and ready["status"] == "False"


def test_a_child_controlled_by_someone_else_is_refused_and_named(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    """The first reconcile applies without reading first: the API server's 422 (two
    controller references) is what stops it taking over another owner's object."""
    other_uid = "0b6c7a6e-1111-4222-8333-944445555666"
    live.apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": naming.worker_name("taken"),
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "someone-else",
                        "uid": other_uid,
                        "controller": True,
                    }
                ],
            },
        },
        namespace=ns,
    )
    _with_secrets(kube, ns, "taken")

    def stalled() -> dict[str, Any] | None:
        return condition(_sync(kube, ns, "taken"), "Stalled")

    cond = wait_for(stalled, what="Stalled")
    assert cond["reason"] == "ChildConflict"
    assert other_uid in cond["message"]
    account = get(kube, "serviceaccount", naming.worker_name("taken"), ns)
    assert account is not None
    refs = account["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [other_uid], "never taken over"


# --- operator restart ------------------------------------------------------------------------


def _count_by_instance(kube: KubeRig, ns: str, name: str) -> dict[str, int]:
    selector = f"{naming.LABEL_INSTANCE}={name}"
    counts = {}
    for kind in KINDS:
        counts[kind] = len(live.get_any(kube, kind, "-n", ns, "-l", selector)["items"])
    return counts


def test_operator_restart_converges_without_duplicates(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    for name in ("keep", "gone", "bare"):
        _with_secrets(kube, ns, name)
    for name in ("keep", "gone", "bare"):
        _wait_children(kube, ns, name)
    keep = _children(kube, ns, "keep")["deployment"]
    assert keep is not None
    before = _template_hash(keep)

    operator.kill()  # a crash: no graceful shutdown
    # While it is down: a spec change, a deletion, and a deletion whose children are gone.
    kube.kubectl(
        "patch", "aas", "keep", "-n", ns, "--type=merge", "-p", '{"spec":{"pollInterval":"7s"}}'
    )
    # "gone" still carries the finalizer an earlier version added (an upgrade), so its
    # deletion is held until the new operator removes it; "bare" has none and goes at once.
    legacy = {"metadata": {"finalizers": [f"{api.GROUP}/cleanup"]}}
    kube.kubectl("patch", "aas", "gone", "-n", ns, "--type=merge", "-p", json.dumps(legacy))
    kube.kubectl("delete", "aas", "gone", "-n", ns, "--wait=false")
    for kind in KINDS:
        kube.kubectl("delete", kind, naming.worker_name("bare"), "-n", ns)
    kube.kubectl("delete", "aas", "bare", "-n", ns, "--wait=false")
    assert _sync(kube, ns, "gone")["metadata"].get("deletionTimestamp"), "held by the finalizer"
    _wait_sync_gone(kube, ns, "bare", timeout_s=10)

    operator.start()
    _wait_sync_gone(kube, ns, "gone")  # the running operator released the legacy finalizer
    assert not any(_children(kube, ns, "bare").values()), "nothing re-created for a gone sync"

    def rolled() -> bool:
        deploy = get(kube, "deployment", naming.worker_name("keep"), ns)
        return deploy is not None and _template_hash(deploy) != before

    wait_for(rolled, what="the change made while down applied")
    sync = _wait_ready(kube, ns, "keep", "Unknown")
    assert sync["status"]["observedGeneration"] == 2
    assert _count_by_instance(kube, ns, "keep") == dict.fromkeys(KINDS, 1)
    created = [
        e["message"]
        for e in live.events_for(kube, ns, api.KIND, "keep")
        if e["reason"] == "Created"
    ]
    assert created == [
        f"Created ServiceAccount, Role, RoleBinding and Deployment {naming.worker_name('keep')}"
    ], "nothing was created twice"


# --- every sample becomes a valid worker; restricted Pod Security; long names ----------------


def _sample_names() -> list[str]:
    return sorted(crd.load_samples())


@pytest.mark.parametrize("filename", _sample_names())
def test_every_sample_reconciles_to_a_worker(
    kube: KubeRig, operator: live.OperatorProcess, ns: str, filename: str
) -> None:
    """The builders' output passes the real API server's validation for every sample (the
    full one sets every worker field: CA volumes, tolerations, affinity, resources)."""
    kube.kubectl("apply", "-n", ns, "-f", str(crd.SAMPLES_DIR / filename))
    names = [d["metadata"]["name"] for d in crd.load_samples()[filename] if d["kind"] == api.KIND]
    for name in names:
        deploy = _wait_children(kube, ns, name)["deployment"]
        sync = _wait_ready(kube, ns, name, "Unknown")
        ready = condition(sync, "Ready")
        assert ready is not None and ready["reason"] == "Progressing", ready
        assert sync["status"]["observedGeneration"] == 1
        assert deploy["spec"]["replicas"] == 1


def test_worker_pod_passes_the_restricted_pod_security_standard(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    """The API server's PodSecurity admission, enforcing `restricted`, admits the worker pod
    (the full sample: Secret volumes, resources, scheduling fields)."""
    kube.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    kube.kubectl("apply", "-n", ns, "-f", str(crd.SAMPLES_DIR / "full.yaml"))
    deploy = _wait_children(kube, ns, "full")["deployment"]
    template = deploy["spec"]["template"]
    # The sample's PriorityClass does not exist here (the Priority admission would refuse it).
    spec = {k: v for k, v in template["spec"].items() if k != "priorityClassName"}
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "worker-probe", "namespace": ns, **template["metadata"]},
        "spec": spec,
    }
    result = kube.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr, result.stderr
    # The check is live: a root container in the same namespace is refused.
    rooted = json.loads(json.dumps(pod))
    rooted["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    refused = kube.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(rooted), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr


def test_long_dotted_sync_name_gets_valid_children(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    name = "orders." + "a" * 70 + ".prod"
    _with_secrets(kube, ns, name)
    children = _wait_children(kube, ns, name)
    worker = naming.worker_name(name)
    assert len(worker) <= 63
    for child in children.values():
        assert child is not None
        assert child["metadata"]["name"] == worker
        assert child["metadata"]["labels"][naming.LABEL_INSTANCE] == naming.label_value(name)
    live.act_as_deployment_controller(kube, ns, worker, ready=True)
    _wait_ready(kube, ns, name, "True")


# --- the API server restarts -----------------------------------------------------------------


def test_operator_carries_on_after_an_api_server_restart(
    kube: KubeRig, operator: live.OperatorProcess, ns: str
) -> None:
    _with_secrets(kube, ns, "before")
    _wait_children(kube, ns, "before")
    kube.restart_apiserver()
    assert operator.running
    # Its watches reconnect: a new sync, a deleted child and a spec change are all handled.
    _with_secrets(kube, ns, "after")
    _wait_children(kube, ns, "after", timeout_s=60)
    old = get(kube, "role", naming.worker_name("before"), ns)
    assert old is not None
    kube.kubectl("delete", "role", naming.worker_name("before"), "-n", ns)

    def role_back() -> bool:
        role = get(kube, "role", naming.worker_name("before"), ns)
        return role is not None and role["metadata"]["uid"] != old["metadata"]["uid"]

    wait_for(role_back, what="the Role put back after the restart", timeout_s=60)
