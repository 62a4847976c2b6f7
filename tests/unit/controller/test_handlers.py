"""kopf handlers called directly, with kopf's own Body and Patch and a fake API."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import pytest

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.clients import kube
from airflow_asset_sync.controller import handlers, observed
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.controller.metrics import OperatorMetrics
from support.fake_kube import FakeKube

NS = "data"
NAME = "orders"
CHILD = "orders-worker"
LOGGER = logging.getLogger("test")


@pytest.fixture
def fake() -> FakeKube:
    fake = FakeKube()
    fake.add_secret(namespace=NS, name="a-creds", keys={"username": "u", "password": "p"})
    fake.add_sync(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": NAME, "namespace": NS, "uid": "sync-1", "generation": 1},
            "spec": {
                "source": {"url": "http://a:8080", "auth": {"basic": {"secretName": "a-creds"}}},
                "targets": [{"name": "b", "url": "http://b:8080"}],
            },
        }
    )
    return fake


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    posted: list[tuple[str, str, str]] = []

    def event(_: Any, *, type: str, reason: str, message: str = "") -> None:
        posted.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return posted


def _memo(fake: FakeKube, *, metrics: OperatorMetrics | None = None, **config: Any) -> kopf.Memo:
    runtime = handlers.Runtime(
        kube=fake,
        config=OperatorConfig(worker_image="op/worker:1", **config),
        now=lambda: datetime(2024, 5, 1, tzinfo=UTC),
        metrics=metrics or OperatorMetrics(),
    )
    return kopf.Memo({handlers.MEMO_KEY: runtime})


def _body(fake: FakeKube) -> kopf.Body:
    raw = fake.get_sync(namespace=NS, name=NAME)
    assert raw is not None
    return kopf.Body(cast(kopf.RawBody, raw))


def test_change_writes_status_into_kopfs_patch_and_posts_events(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=_memo(fake), retry=0, logger=LOGGER)
    assert set(patch) == {"status"}
    assert set(patch["status"]) == {"observedGeneration", "conditions"}
    assert patch["status"]["observedGeneration"] == 1
    assert events == [
        ("Normal", "Created", f"Created ServiceAccount, Role, RoleBinding and Deployment {CHILD}")
    ]


def test_unchanged_status_leaves_the_patch_empty(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=_memo(fake), retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    again = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=again, memo=_memo(fake), retry=0)
    assert not again


@pytest.mark.parametrize(("retry", "delay"), [(0, 5.0), (1, 10.0), (3, 40.0), (20, 300.0)])
def test_missing_secret_is_a_temporary_error_with_backoff(
    fake: FakeKube, events: list[tuple[str, str, str]], retry: int, delay: float
) -> None:
    del fake.secrets[(NS, "a-creds")]
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError) as raised:
        handlers.on_change(body=_body(fake), patch=patch, memo=_memo(fake), retry=retry)
    assert raised.value.delay == delay
    assert 'Secret "a-creds" not found' in str(raised.value)
    # Status and the Warning event still go out: kopf applies the patch on failure too.
    assert patch["status"]["conditions"][0]["reason"] == "SecretNotFound"
    assert events[0][:2] == ("Warning", "SecretNotFound")


def test_invalid_spec_is_a_permanent_error(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    fake.objects[(api.KIND, NS, NAME)]["spec"]["startFrom"] = "tomorrow"
    with pytest.raises(kopf.PermanentError, match="InvalidSpec"):
        handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=_memo(fake), retry=0)


def test_resync_never_raises_for_problems(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    del fake.secrets[(NS, "a-creds")]
    memo = _memo(fake)
    handlers.on_sync_event(type=None, body=_body(fake), memo=memo)
    assert handlers._runtime(memo).resyncer.run_once() == 1
    status = fake.get_sync(namespace=NS, name=NAME)
    assert status is not None
    assert status["status"]["conditions"][0]["reason"] == "SecretNotFound"


def test_resync_reconciles_known_syncs_and_forgets_deleted_ones(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    memo = _memo(fake)
    resyncer = handlers._runtime(memo).resyncer
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)
    assert resyncer.run_once() == 1
    assert fake.find("Deployment", NS, CHILD) is not None
    handlers.on_sync_event(type="DELETED", body=_body(fake), memo=memo)
    assert resyncer.known() == []


def _deliver_children(fake: FakeKube, memo: kopf.Memo) -> None:
    """What kopf's watches do: every child the fake holds reaches `on_child_event`."""
    for (kind, namespace, _), obj in list(fake.objects.items()):
        if kind != api.KIND:
            raw = cast(kopf.RawBody, obj)
            handlers.on_child_event(
                type="MODIFIED", body=kopf.Body(raw), namespace=namespace, memo=memo
            )


def test_an_idle_resync_round_costs_one_list_per_namespace(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    memo = _memo(fake)
    handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=memo, retry=0)
    fake.roll_out(namespace=NS, name=CHILD)
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)
    _deliver_children(fake, memo)
    resyncer = handlers._runtime(memo).resyncer
    resyncer.run_once()  # writes Ready (the rollout finished since the create)
    fake.calls.clear()
    assert resyncer.run_once() == 1
    # No GET or apply of any child, no GET of the sync, no status write; the Secret was read
    # by the round before, less than half an interval ago.
    assert fake.calls == [("list", api.KIND, NS)]


def test_a_resync_round_lists_page_by_page_and_forgets_a_sync_no_page_had(
    fake: FakeKube, events: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "LIST_PAGE", 2)
    memo = _memo(fake)
    runtime = handlers._runtime(memo)
    for i in range(4):
        fake.add_sync({**_body(fake), "metadata": {"name": f"more-{i}", "namespace": NS}})
    for (kind, _, _name), obj in list(fake.objects.items()):
        if kind == api.KIND:
            handlers.on_sync_event(type="ADDED", body=kopf.Body(cast(kopf.RawBody, obj)), memo=memo)
    vanished = fake.objects.pop((api.KIND, NS, "more-3"))
    fake.calls.clear()
    assert runtime.resyncer.run_once() == 4
    assert [c for c in fake.calls if c[0] == "list"] == [("list", api.KIND, NS)] * 2
    assert vanished["metadata"]["uid"] not in {k.uid for k in runtime.resyncer.known()}
    assert len(runtime.resyncer.known()) == 4


def test_a_round_stopped_midway_forgets_none_of_the_syncs_it_did_not_reach() -> None:
    keys = [handlers.SyncKey(namespace=NS, name=f"s{i}", uid=f"u{i}") for i in range(3)]
    bodies = [{"metadata": {"uid": key.uid}} for key in keys]
    resyncer: handlers.Resyncer

    def run_one(key: handlers.SyncKey, body: Any) -> None:
        resyncer.stop()  # the operator shuts down during the round

    resyncer = handlers.Resyncer(
        interval=60, run_one=run_one, list_namespace=lambda ns, token: (bodies, None)
    )
    for key in keys:
        resyncer.seen(key)
    assert resyncer.run_once() == 1
    assert resyncer.known() == keys


def test_a_resync_applies_a_child_someone_else_changed_last(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    memo = _memo(fake)
    handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=memo, retry=0)
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)
    role = fake.objects[("Role", NS, CHILD)]
    role["rules"] = []
    role["metadata"]["managedFields"] = [
        {"manager": "kubectl-edit", "operation": "Update", "time": "2024-05-01T00:00:00Z"}
    ]
    runtime = handlers._runtime(memo)
    runtime.children.record(role)  # the watch saw the edit (its own reconcile aside)
    fake.calls.clear()
    runtime.resyncer.run_once()
    assert ("apply", "Role", CHILD) in fake.calls
    assert ("apply", "Deployment", CHILD) not in fake.calls or not runtime.children(
        "Deployment", NS, CHILD
    )
    assert fake.objects[("Role", NS, CHILD)]["rules"]


def test_a_resync_puts_back_a_deleted_child(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    memo = _memo(fake)
    handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=memo, retry=0)
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)
    _deliver_children(fake, memo)
    runtime = handlers._runtime(memo)
    gone = fake.objects.pop(("ServiceAccount", NS, CHILD))
    runtime.children.record(gone, deleted=True)
    fake.calls.clear()
    runtime.resyncer.run_once()
    assert [c for c in fake.calls if c[0] == "apply"] == [("apply", "ServiceAccount", CHILD)]
    assert fake.find("ServiceAccount", NS, CHILD) is not None


def test_a_rotated_secret_rolls_the_worker_at_the_round_after_the_cache_expires(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    clock = [1000.0]
    memo = _memo(fake, resync_seconds=60.0)
    secrets = observed.SecretsSeenRecently(fake, max_age_seconds=30.0, clock=lambda: clock[0])
    object.__setattr__(handlers._runtime(memo), "resync_secrets", secrets)
    handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=memo, retry=0)
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)
    _deliver_children(fake, memo)
    resyncer = handlers._runtime(memo).resyncer
    resyncer.run_once()
    before = fake.objects[("Deployment", NS, CHILD)]["spec"]["template"]["metadata"]
    fake.add_secret(
        namespace=NS, name="a-creds", keys={"username": "u", "password": "q"}, version="2"
    )
    clock[0] += 31.0  # past half the interval: the round reads the Secret afresh
    resyncer.run_once()
    after = fake.objects[("Deployment", NS, CHILD)]["spec"]["template"]["metadata"]
    assert after["annotations"] != before["annotations"]


def test_resync_skips_a_round_while_inactive(fake: FakeKube) -> None:
    runtime = handlers.Runtime(
        kube=fake, config=OperatorConfig(worker_image="w:1"), active=lambda: False
    )
    memo = kopf.Memo({handlers.MEMO_KEY: runtime})
    handlers.on_sync_event(type=None, body=_body(fake), memo=memo)
    assert runtime.resyncer.run_once() == 0
    assert fake.find("Deployment", NS, CHILD) is None


def test_worker_event_refreshes_the_owning_sync(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=_memo(fake), retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    events.clear()
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))
    handlers.on_child_event(type="MODIFIED", body=deployment, namespace=NS, memo=_memo(fake))
    status = fake.get_sync(namespace=NS, name=NAME)
    assert status is not None
    assert status["status"]["conditions"][0]["status"] == "True"
    # The transition is announced on the sync.
    assert events == [("Normal", "WorkerAvailable", f"Worker {CHILD} is available")]


def _ready(fake: FakeKube) -> str:
    sync = fake.get_sync(namespace=NS, name=NAME)
    assert sync is not None
    return str(sync["status"]["conditions"][0]["status"])


def test_ready_follows_the_rollout_from_the_watches_alone(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Deployment's event finds the sync in memory (its own last event): no read."""
    posted: list[tuple[str, Any]] = []

    def event(body: Any, *, type: str, reason: str, message: str = "") -> None:
        posted.append((reason, body))

    monkeypatch.setattr(kopf, "event", event)
    memo = _memo(fake)
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=memo, retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    handlers.on_sync_event(type="MODIFIED", body=_body(fake), memo=memo)
    fake.calls.clear()
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))
    handlers.on_child_event(type="MODIFIED", body=deployment, namespace=NS, memo=memo)
    assert fake.calls == [("patch-status", api.KIND, NAME)]
    assert _ready(fake) == "True"
    # The transition's event names the sync in full (kopf builds involvedObject from it).
    reason, body = posted[-1]
    assert reason == "WorkerAvailable"
    assert (body["apiVersion"], body["kind"]) == (api.API_VERSION, api.KIND)
    assert (body["metadata"]["name"], body["metadata"]["uid"]) == (NAME, "sync-1")


def test_the_async_handlers_do_their_api_work_off_the_event_loop(
    fake: FakeKube, events: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = _memo(fake)
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=memo, retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    writers: list[str] = []
    write = fake.patch_sync_status

    def patch_status(**kwargs: Any) -> dict[str, Any]:
        writers.append(threading.current_thread().name)
        return write(**kwargs)

    monkeypatch.setattr(fake, "patch_sync_status", patch_status)
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))

    async def deliver() -> str:
        await handlers.on_sync_event_async(type="MODIFIED", body=_body(fake), memo=memo)
        await handlers.on_child_event_async(
            type="MODIFIED", body=deployment, namespace=NS, memo=memo
        )
        return threading.current_thread().name

    loop_thread = asyncio.run(deliver())
    assert _ready(fake) == "True"
    assert writers and loop_thread not in writers


def test_the_later_of_the_two_events_turns_ready_true(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    """The rollout's event came first, before the sync's status was written: the sync's
    own event then finds the Deployment's fingerprint and writes Ready."""
    memo = _memo(fake)
    patch = kopf.Patch()
    handlers.on_sync_event(type="ADDED", body=_body(fake), memo=memo)  # no status yet
    handlers.on_change(body=_body(fake), patch=patch, memo=memo, retry=0)
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))
    handlers.on_child_event(type="MODIFIED", body=deployment, namespace=NS, memo=memo)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    assert _ready(fake) != "True"  # the rollout's event stood aside: no status to judge
    written = _body(fake)
    fake.calls.clear()
    handlers.on_sync_event(type="MODIFIED", body=written, memo=memo)
    assert fake.calls == [("patch-status", api.KIND, NAME)]
    assert _ready(fake) == "True"


def test_conditions_from_a_stale_copy_are_never_written(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    memo = _memo(fake)
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=memo, retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    handlers.on_sync_event(type="MODIFIED", body=_body(fake), memo=memo)
    # Someone writes the sync after the copy the operator holds was taken.
    fake.patch_sync_status(namespace=NS, name=NAME, status={"note": "newer"})
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))
    handlers.on_child_event(type="MODIFIED", body=deployment, namespace=NS, memo=memo)
    assert _ready(fake) != "True"  # 409: the newer version's own event will recompute
    handlers.on_sync_event(type="MODIFIED", body=_body(fake), memo=memo)
    assert _ready(fake) == "True"


def test_two_follow_ups_of_one_rollout_write_ready_once(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    """The Deployment's event and an event of the sync both compute Ready from the same
    version of the sync and queue a write. The first writes; the second finds the version
    that write made (recorded at once) and has nothing left to write. Before, it wrote onto
    the old version and was refused with 409: a wasted request per race."""
    memo = _memo(fake)
    runtime = handlers._runtime(memo)
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=memo, retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    handlers.on_sync_event(type="MODIFIED", body=_body(fake), memo=memo)
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))
    from_child = handlers.note_child_event(runtime, type="MODIFIED", body=deployment, namespace=NS)
    from_sync = handlers.note_sync_event(runtime, type="MODIFIED", body=_body(fake))
    assert from_child is not None and from_sync is not None
    fake.calls.clear()
    from_child()
    from_sync()
    assert fake.calls == [("patch-status", api.KIND, NAME)]
    assert _ready(fake) == "True"
    assert [e[1] for e in events].count("WorkerAvailable") == 1


def test_a_follow_up_behind_a_newer_version_writes_onto_it(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    """A newer version arrived while the write waited (someone else wrote status): the
    conditions are recomputed from it and written onto it, not refused onto the old one."""
    memo = _memo(fake)
    runtime = handlers._runtime(memo)
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=memo, retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    handlers.on_sync_event(type="MODIFIED", body=_body(fake), memo=memo)
    deployment = kopf.Body(cast(kopf.RawBody, fake.roll_out(namespace=NS, name=CHILD)))
    follow_up = handlers.note_child_event(runtime, type="MODIFIED", body=deployment, namespace=NS)
    assert follow_up is not None
    fake.patch_sync_status(namespace=NS, name=NAME, status={"note": "newer"})
    runtime.syncs.record(_body(fake))  # its watch event, noted before the write ran
    fake.calls.clear()
    follow_up()
    assert fake.calls == [("patch-status", api.KIND, NAME)]
    assert _ready(fake) == "True"


def test_deleted_child_is_put_back_at_once(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    patch = kopf.Patch()
    handlers.on_change(body=_body(fake), patch=patch, memo=_memo(fake), retry=0)
    fake.patch_sync_status(namespace=NS, name=NAME, status=dict(patch["status"]))
    role = fake.find("Role", NS, CHILD)
    assert role is not None
    fake.delete(kube.ChildKind.ROLE, namespace=NS, name=CHILD)
    events.clear()
    body = kopf.Body(cast(kopf.RawBody, role))
    handlers.on_child_event(type="DELETED", body=body, namespace=NS, memo=_memo(fake))
    assert fake.find("Role", NS, CHILD) is not None
    assert ("Normal", "Created", f"Created Role {CHILD}") in events


def test_child_edited_by_someone_else_is_restored(
    fake: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=_memo(fake), retry=0)
    role = fake.find("Role", NS, CHILD)
    assert role is not None
    role["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    edited = {
        **role,
        "metadata": {
            **role["metadata"],
            "managedFields": [
                {"manager": kube.OPERATOR_FIELD_MANAGER, "time": "2024-05-01T00:00:00Z"},
                {"manager": "kubectl-edit", "time": "2024-05-01T00:00:05Z"},
            ],
        },
    }
    body = kopf.Body(cast(kopf.RawBody, edited))
    handlers.on_child_event(type="MODIFIED", body=body, namespace=NS, memo=_memo(fake))
    restored = fake.find("Role", NS, CHILD)
    assert restored is not None
    assert restored["rules"][0]["resources"] == [api.PLURAL]


def test_child_event_for_an_unowned_object_does_nothing(fake: FakeKube) -> None:
    body = kopf.Body(cast(kopf.RawBody, {"metadata": {"name": "x", "namespace": NS}}))
    handlers.on_child_event(type="ADDED", body=body, namespace=NS, memo=_memo(fake))
    handlers.on_child_event(type="DELETED", body=body, namespace=NS, memo=_memo(fake))
    assert fake.calls == []


def test_startup_serves_metrics_on_the_configured_port(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports: list[int] = []
    monkeypatch.setattr(OperatorMetrics, "serve", lambda self, *, port: ports.append(port))
    memo = _memo(fake, metrics_port=9100)
    handlers.on_startup(memo=memo, logger=LOGGER)
    handlers.on_cleanup(memo=memo)
    assert ports == [9100]


def test_startup_runs_the_resync_thread_until_cleanup(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, str, str]]
) -> None:
    monkeypatch.setattr(OperatorMetrics, "serve", lambda self, *, port: None)
    memo = _memo(fake, resync_seconds=0.05)
    handlers.on_sync_event(type=None, body=_body(fake), memo=memo)
    handlers.on_startup(memo=memo, logger=LOGGER)
    try:
        deadline = time.monotonic() + 5
        while fake.find("Deployment", NS, CHILD) is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        handlers.on_cleanup(memo=memo)
    assert fake.find("Deployment", NS, CHILD) is not None
    calls = len(fake.calls)
    time.sleep(0.2)
    assert len(fake.calls) == calls, "stopped"


def test_reconciles_are_counted(fake: FakeKube, events: list[tuple[str, str, str]]) -> None:
    # Two runtimes (the second must not find the Secret the first just read) that count
    # into one registry.
    metrics = OperatorMetrics()
    registry = metrics.registry

    def count(result: str) -> float:
        value = registry.get_sample_value(
            "airflow_asset_sync_operator_reconciles_total", {"trigger": "change", "result": result}
        )
        return value or 0.0

    before_ok, before_problem = count("success"), count("problem")
    memo = _memo(fake, metrics=metrics)
    handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=memo, retry=0)
    del fake.secrets[(NS, "a-creds")]
    memo = _memo(fake, metrics=metrics)
    with pytest.raises(kopf.TemporaryError):
        handlers.on_change(body=_body(fake), patch=kopf.Patch(), memo=memo, retry=0)
    assert count("success") == before_ok + 1
    assert count("problem") == before_problem + 1
    errors = registry.get_sample_value(
        "airflow_asset_sync_operator_reconcile_errors_total", {"reason": "SecretNotFound"}
    )
    assert errors is not None
    assert errors >= 1


def test_registry_wires_every_trigger() -> None:
    """Inspects kopf's registry internals: the ids, causes and filters we rely on."""
    registry = handlers.build_registry(OperatorConfig(resync_seconds=17))
    changing = registry._changing.get_all_handlers()
    by_reason = {(str(h.reason) if h.reason else "resume"): h for h in changing}
    # No delete handler and no timer: either would make kopf hold a finalizer.
    assert set(by_reason) == {"resume", "create", "update"}
    assert by_reason["update"].field == ("spec",)
    for handler in changing:
        assert handler.selector is not None
        assert (handler.selector.group, handler.selector.version) == (api.GROUP, api.VERSION)
    assert not registry._spawning.get_all_handlers()
    assert not any(h.requires_finalizer for h in changing)
    watching = [w for w in registry._watching.get_all_handlers() if str(w.id) != "track"]
    assert {(w.selector.group, w.selector.any_name) for w in watching if w.selector} == {
        ("", "serviceaccounts"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("apps", "deployments"),
        ("", "services"),
    }
    for watch in watching:
        assert watch.labels == {"app.kubernetes.io/managed-by": "airflow-asset-sync-operator"}
    activities = {str(h.id): h for h in registry._activities.get_all_handlers()}
    assert set(activities) == {"on_login", "on_startup", "on_cleanup"}
    # Without a login handler of its own, a private registry cannot authenticate at all.
    assert str(activities["on_login"].activity) == "authentication"


def test_sync_locks_are_shared_while_held_and_then_released() -> None:
    locks = handlers.SyncLocks()
    held = locks("uid-1")
    assert locks("uid-1") is held
    assert len(locks) == 1
    del held
    gc.collect()
    assert len(locks) == 0  # no delete handler needed to forget a deleted sync's lock
