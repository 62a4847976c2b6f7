"""The worker's `StatusOffsetStore` against the real API server's status subresource."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from airflow_asset_sync.api.events import Envelope, SourceEvent
from airflow_asset_sync.api.spec import ObjectRef, SyncSpec
from airflow_asset_sync.api.status import Checkpoint, Failure, SourceStatus, TargetStatus
from airflow_asset_sync.clients.kube import KubeError
from airflow_asset_sync.worker.parking import ParkingLot
from airflow_asset_sync.worker.pipeline import replayer_options
from airflow_asset_sync.worker.replayer import ReplayerOptions
from airflow_asset_sync.worker.status_store import StatusOffsetStore
from rig.kube import KubeRig
from support import live

pytestmark = pytest.mark.rig

T = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


async def test_cleared_fields_leave_the_status_and_the_operators_keys_stay(
    sync_crd: KubeRig,
) -> None:
    # The soak found `status.source.lastError` still set long after the source recovered:
    # saves were merge patches without the cleared keys, which a merge patch leaves alone.
    kube = sync_crd
    namespace = live.create_namespace(kube, "status-store")
    live.apply(kube, live.sync_manifest("s"), namespace=namespace)
    kube.kubectl(
        "patch", "airflowassetsync", "s", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", '{"status": {"observedGeneration": 1}}',
    )  # fmt: skip
    store = StatusOffsetStore(
        live.kube_client_for(kube.kubeconfig), ObjectRef(namespace=namespace, name="s")
    )
    failing = SourceStatus(
        checkpoint=Checkpoint(timestamp=T, seen_ids=[7], settled_before=T, initialized=True),
        last_error="Unavailable: GET /api/v2/assets/events: ReadError",
        events_published=5,
    )
    await store.save_source(failing)
    await store.save_target(TargetStatus(name="b", last_error="boom", events_replayed=5))
    stored = live.get(kube, "airflowassetsync", "s", namespace)
    assert stored is not None
    assert stored["status"]["source"]["lastError"].startswith("Unavailable")

    recovered = failing.model_copy(
        update={
            "last_error": None,
            "events_published": 6,
            "checkpoint": Checkpoint(timestamp=T, seen_ids=[7, 8], initialized=True),
        }
    )
    await store.save_source(recovered)
    await store.save_target(TargetStatus(name="b", events_replayed=6))
    status = (live.get(kube, "airflowassetsync", "s", namespace) or {})["status"]
    assert "lastError" not in status["source"]
    assert "settledBefore" not in status["source"]["checkpoint"]
    assert status["source"]["eventsPublished"] == 6
    assert status["source"]["checkpoint"]["seenIds"] == [7, 8]
    (target,) = status["targets"]
    assert "lastError" not in target
    assert target["eventsReplayed"] == 6
    assert status["observedGeneration"] == 1  # the operator's key, untouched
    loaded = await store.load()
    assert loaded.source.last_error is None
    assert loaded.source.events_published == 6

    # The sync deleted under a running worker (what the garbage collector does when a sync is
    # deleted): the save fails at once with the 404 the worker's stop treats as expected,
    # not after a retry loop.
    kube.kubectl("delete", "airflowassetsync", "s", "-n", namespace, "--timeout=15s")
    with pytest.raises(KubeError) as refused:
        await asyncio.wait_for(store.save_target(TargetStatus(name="b")), timeout=10)
    assert refused.value.status == 404
    assert not refused.value.retriable


async def test_twenty_targets_parked_to_their_byte_budget_fit_in_one_object(
    sync_crd: KubeRig,
) -> None:
    """Parked events live in the AirflowAssetSync's status, which etcd keeps below 1.5 MB.

    Every target of a 20-target sync parks events until its lot says it is full, and every
    target's status is saved: the API server (and etcd behind it) takes the object, and
    loading it gives the same parked events back. With the old fixed 256 KiB per target this
    object would have been 5 MB, and every status save of that sync refused.
    """
    kube = sync_crd
    namespace = live.create_namespace(kube, "status-parked")
    targets = [{"name": f"t{i:02d}", "url": f"http://airflow-{i}:8080"} for i in range(20)]
    manifest = live.sync_manifest("s")
    manifest["spec"]["targets"] = targets
    live.apply(kube, manifest, namespace=namespace)
    spec = SyncSpec.model_validate(manifest["spec"])
    store = StatusOffsetStore(
        live.kube_client_for(kube.kubeconfig), ObjectRef(namespace=namespace, name="s")
    )
    saved: dict[str, TargetStatus] = {}
    for target in spec.targets:
        limits = replayer_options(ReplayerOptions(), target, targets=len(spec.targets)).parking
        status = TargetStatus(name=target.name)
        lot = ParkingLot(status, limits)
        n = 0
        while lot.full() is None:
            n += 1
            event = SourceEvent(id=n, uri="s3://x", timestamp=T, extra={"row": "r" * 120, "n": n})
            lot.park("s3://x", Envelope(sync=f"{namespace}/s", origin="http://a", event=event), T)
        saved[target.name] = status
        # A refused save is retried for ever (it looks transient): bound the wait.
        await asyncio.wait_for(store.save_target(status), timeout=30)
    stored = live.get(kube, "airflowassetsync", "s", namespace)
    assert stored is not None
    assert len(json.dumps(stored)) < 1_500_000
    loaded = await store.load()
    assert {t.name: t.parked for t in loaded.targets} == {n: t.parked for n, t in saved.items()}
    assert sum(t.parked_events for t in loaded.targets) > 20 * 100


async def test_failures_lag_and_removed_targets_as_the_api_server_stores_them(
    sync_crd: KubeRig,
) -> None:
    """The CRD keeps what the worker reports (a pruned `failure` would leave the sync Ready),
    `lagSeconds` is the largest target lag, and a removed target leaves the list."""
    kube = sync_crd
    namespace = live.create_namespace(kube, "status-failure")
    live.apply(kube, live.sync_manifest("s"), namespace=namespace)
    store = StatusOffsetStore(
        live.kube_client_for(kube.kubeconfig), ObjectRef(namespace=namespace, name="s")
    )
    refused = Failure(
        component="Target", kind="AuthFailed", retriable=False, message="login refused", since=T
    )
    await store.save_target(TargetStatus(name="gone", lag_seconds=31.0))
    await store.save_target(TargetStatus(name="b", lag_seconds=4.5, failure=refused))
    await store.save_target(TargetStatus(name="c", lag_seconds=None))
    status = (live.get(kube, "airflowassetsync", "s", namespace) or {})["status"]
    assert status["lagSeconds"] == 31.0
    by_name = {t["name"]: t for t in status["targets"]}
    assert by_name["b"]["failure"] == {
        "component": "Target",
        "kind": "AuthFailed",
        "retriable": False,
        "message": "login refused",
        "since": "2026-11-25T03:00:00Z",
    }

    await store.load(targets={"b", "c"})  # what the worker does at start
    await store.save_target(TargetStatus(name="b", lag_seconds=0.0))
    status = (live.get(kube, "airflowassetsync", "s", namespace) or {})["status"]
    assert sorted(t["name"] for t in status["targets"]) == ["b", "c"]
    assert status["lagSeconds"] == 0.0
    assert "failure" not in {t["name"]: t for t in status["targets"]}["b"]
