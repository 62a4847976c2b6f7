"""Chains, hubs and rings: the marker's path, the forwarding decision, dedup by origin event."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_asset_sync.api.events import MARKER_KEY, Envelope, Marker, SourceEvent
from airflow_asset_sync.api.spec import SyncSpec
from airflow_asset_sync.worker.copies import TargetCopies
from airflow_asset_sync.worker.forwarding import decide, on_path
from airflow_asset_sync.worker.parking import key_of, parked_event
from airflow_asset_sync.worker.poller import PollSettings

from . import test_poller, test_replayer
from .fakes import T0, deliveries

A, B, C = "http://a:8080", "http://b:8080", "http://c:8080"


def copy_extra(
    origin: str = A, event_id: int = 7, path: list[str] | None = None, sync: str = "ns/a-to-b"
) -> dict[str, Any]:
    """`extra` of a copy a replayer wrote (with a ``path``, or an old marker without one)."""
    marker: dict[str, Any] = {
        "origin": origin,
        "event_id": event_id,
        "timestamp": T0.isoformat(),
        "sync": sync,
    }
    if path is not None:
        marker["path"] = path
    return {"rows": 3, MARKER_KEY: marker}


def event(event_id: int, extra: dict[str, Any] | None = None, uri: str = "s3://b/x") -> SourceEvent:
    return SourceEvent(
        id=event_id, uri=uri, timestamp=T0 + timedelta(seconds=event_id), extra=extra or {}
    )


# -- the marker ---------------------------------------------------------------------------


def test_a_direct_copy_starts_a_path_of_one() -> None:
    marker = Envelope(sync="ns/a-to-b", origin=A, event=event(7)).marker()
    assert (marker.origin, marker.event_id, marker.path) == (A, 7, (A,))
    assert not marker.forwarded
    assert marker.to_json()["path"] == [A]


def test_an_old_marker_without_a_path_means_one_hop_from_its_origin() -> None:
    old = Marker.from_extra(copy_extra(path=None))
    assert old is not None
    assert (old.path, old.hops, old.forwarded) == ((), (A,), False)
    assert "path" not in old.to_json()  # read compatibly, never rewritten


@pytest.mark.parametrize("path", [None, [A]], ids=["old-marker", "with-path"])
def test_a_forwarded_copy_names_its_origin_event_and_grows_the_path(
    path: list[str] | None,
) -> None:
    """B -> C of an event born in A: the origin's id and time, this sync, path (A, B)."""
    copy_in_b = event(41, copy_extra(origin=A, event_id=7, path=path))
    envelope = Envelope(sync="ns/b-to-c", origin=B, event=copy_in_b)

    marker = envelope.marker()

    assert (marker.origin, marker.event_id, marker.timestamp) == (A, 7, T0)
    assert (marker.sync, marker.path, marker.forwarded) == ("ns/b-to-c", (A, B), True)
    assert marker.key == (A, 7, "ns/b-to-c")
    written = envelope.target_extra()
    assert written["rows"] == 3
    assert written[MARKER_KEY]["path"] == [A, B]
    assert Marker.from_extra(written) == marker


# -- the decision ---------------------------------------------------------------------------


def marker_with(path: tuple[str, ...]) -> Marker:
    return Marker(origin=path[0], event_id=1, timestamp=T0, sync="x/y", path=path)


@pytest.mark.parametrize(
    ("path", "source", "targets", "max_hops", "expected"),
    [
        ((A,), B, [C], 4, "forwarded"),  # A -> B -> C
        ((A,), B, [A], 4, "path"),  # A <-> B: back to its origin
        ((A,), B, [A, C], 4, "forwarded"),  # one target off the path is enough
        ((A, B), C, [A], 4, "path"),  # ring of three: C -> A closes it
        ((A, B), C, [A, B], 4, "path"),
        ((A,), B, [C], 1, "hop_limit"),  # maxHops 1: copies never go on
        ((A, B, C), "http://d", ["http://e"], 3, "hop_limit"),  # would be a fourth hop
        ((A, B, C), "http://d", ["http://e"], 4, "forwarded"),
        ((A, B), A, [C], 4, "path"),  # came back round to an instance it went through
    ],
)
def test_decide(
    path: tuple[str, ...], source: str, targets: list[str], max_hops: int, expected: str
) -> None:
    assert decide(marker_with(path), source=source, targets=targets, max_hops=max_hops) == (
        expected
    )


def test_an_event_without_a_marker_is_native() -> None:
    assert decide(None, source=A, targets=[A], max_hops=1) == "native"


def test_on_path_is_per_target() -> None:
    marker = marker_with((A, B))
    assert on_path(marker, A) and on_path(marker, B) and not on_path(marker, C)


def test_max_hops_is_validated_and_named() -> None:
    spec = {"source": {"url": A}, "targets": [{"name": "c", "url": C}]}
    assert SyncSpec.model_validate(spec).max_hops == 4
    with pytest.raises(ValidationError, match="maxHops 0 must be between 1 and 16") as info:
        SyncSpec.model_validate({**spec, "maxHops": 0})
    assert info.value.errors()[0]["loc"] == ("maxHops",)


# -- the poller -----------------------------------------------------------------------------


def poller_rig(targets: tuple[str, ...], max_hops: int = 4) -> test_poller.Rig:
    """A poller of a sync whose source is B (`test_poller.ORIGIN`)."""
    rig = test_poller.Rig()
    rig.poller._settings = dataclasses.replace(
        rig.poller._settings, targets=targets, max_hops=max_hops
    )
    return rig


def test_from_spec_takes_the_target_identities_and_the_hop_limit() -> None:
    spec = SyncSpec.model_validate(
        {
            "source": {"url": B},
            "targets": [{"name": "a", "url": A}, {"name": "c", "url": C, "instanceId": "c"}],
            "maxHops": 2,
        }
    )
    settings = PollSettings.from_spec(spec, sync="ns/b")
    assert (settings.targets, settings.max_hops) == ((A, "c"), 2)


async def test_poller_forwards_a_copy_that_a_target_needs_and_counts_it() -> None:
    b = test_poller.ORIGIN
    rig = poller_rig(targets=(A, C))
    native = rig.server.emit("s3://b/x", at=test_poller.at(1))
    copy = rig.server.emit("s3://b/x", at=test_poller.at(2), extra=copy_extra(path=[A]))

    result = await rig.poller.poll_once()

    assert rig.publisher.ids == [native.id, copy.id]
    assert (result.published, result.forwarded, result.looped) == (2, 1, 0)
    forwarded = rig.publisher.published[1].marker()
    assert (forwarded.origin, forwarded.event_id, forwarded.path) == (A, 7, (A, b))
    assert rig.metric("copies_forwarding", decision="forwarded") == 1


async def test_poller_drops_copies_no_target_needs_by_path_and_by_hop_limit() -> None:
    rig = poller_rig(targets=(A, C), max_hops=3)
    at = test_poller.at
    rig.server.emit("s3://b/x", at=at(1), extra=copy_extra(origin=C, path=[C]))
    rig.server.emit("s3://b/x", at=at(2), extra=copy_extra(origin=C, path=[C, A]))
    rig.server.emit("s3://b/x", at=at(3), extra=copy_extra(path=[A, "http://d", "http://e"]))
    last = rig.server.emit("s3://b/x", at=at(4))

    result = await rig.poller.poll_once()

    # (C) + B: A is off the path -> forwarded; (C, A) + B: every target is on it; (A, D, E)
    # + B would be a fourth hop, past maxHops 3.
    assert rig.publisher.ids == [1, last.id]
    assert (result.forwarded, result.looped) == (1, 2)
    assert rig.metric("copies_forwarding", decision="path") == 1
    assert rig.metric("copies_forwarding", decision="hop_limit") == 1
    assert rig.metric("events_filtered", reason="synced") == 2
    assert rig.poller.status.checkpoint.timestamp == test_poller.at(4)


async def test_max_hops_one_keeps_the_old_rule_no_copy_goes_on() -> None:
    rig = poller_rig(targets=(C,), max_hops=1)
    rig.server.emit("s3://b/x", at=test_poller.at(1), extra=copy_extra(path=None))
    assert (await rig.poller.poll_once()).published == 0


async def test_an_unreadable_marker_is_never_forwarded() -> None:
    rig = poller_rig(targets=(C,))
    rig.server.emit("s3://b/x", at=test_poller.at(1), extra={MARKER_KEY: {"origin": A}})
    assert (await rig.poller.poll_once()).published == 0
    assert rig.metric("copies_forwarding", decision="path") == 1


# -- the replayer ---------------------------------------------------------------------------


def forwarded(event_id: int, origin_id: int, *, path: list[str], sync: str = "ns/b-to-c") -> Any:
    """A delivery of sync `sync` from B: B's copy `event_id` of `origin_id` born in A."""
    return Envelope(
        sync=sync, origin=B, event=event(event_id, copy_extra(event_id=origin_id, path=path))
    )


def replayer_rig(url: str = C) -> test_replayer.Rig:
    return test_replayer.Rig(url=url)


def copies_of(rig: test_replayer.Rig, origin_id: int) -> int:
    return sum(
        1
        for row in rig.server.rows
        if (m := Marker.from_extra(row.extra)) is not None and m.origin_key == (A, origin_id)
    )


async def test_a_target_on_the_path_gets_nothing_but_the_delivery_is_committed() -> None:
    rig = replayer_rig(url=A)  # this sync's target is the origin of the copy
    batch = deliveries([forwarded(41, 7, path=[A])])

    committed = await rig.replayer.replay(batch, rig.stop)

    assert committed == batch
    assert rig.written() == []
    assert rig.counter("events_skipped", reason="on_path") == 1
    assert rig.status.events_skipped == 0  # routing, not a problem


async def test_a_forwarded_copy_is_written_with_the_origin_event_and_the_path() -> None:
    rig = replayer_rig()
    rig.replayer._suspect_left = 0  # past the restart window: the path check still asks

    await rig.replayer.replay(deliveries([forwarded(41, 7, path=[A])]), rig.stop)

    [marker] = rig.markers()
    assert (marker.origin, marker.event_id, marker.sync, marker.path) == (
        A,
        7,
        "ns/b-to-c",
        (A, B),
    )


async def test_an_event_arriving_by_a_second_path_lands_once() -> None:
    """A -> C wrote the event directly; its copy forwarded A -> B -> C is not written."""
    rig = replayer_rig()
    rig.replayer._suspect_left = 0
    direct = Envelope(sync="ns/a-to-c", origin=A, event=event(7)).target_extra()
    rig.server.emit("s3://b/x", extra=direct, source_dag_id=None)

    committed = await rig.replayer.replay(deliveries([forwarded(41, 7, path=[A])]), rig.stop)

    assert len(committed) == 1
    assert copies_of(rig, 7) == 1
    assert rig.counter("events_other_path") == 1
    assert rig.counter("events_deduplicated") == 1


async def test_two_forwarded_paths_into_one_target_land_once() -> None:
    """A hub: the same origin event forwarded by B (A -> B -> C) and by D (A -> D -> C)."""
    via_b = replayer_rig()
    via_d = test_replayer.Rig(server=via_b.server, url=C, assets=())
    for rig in (via_b, via_d):
        rig.replayer._suspect_left = 0
    d = "http://d:8080"
    from_d = Envelope(sync="ns/d-to-c", origin=d, event=event(90, copy_extra(event_id=7, path=[A])))

    await via_b.replayer.replay(deliveries([forwarded(41, 7, path=[A])]), via_b.stop)
    await via_d.replayer.replay(deliveries([from_d]), via_d.stop)

    assert copies_of(via_b, 7) == 1
    assert via_d.counter("events_other_path") == 1


async def test_a_direct_delivery_checked_after_a_restart_sees_a_forwarded_copy() -> None:
    rig = replayer_rig()  # fresh start: its first deliveries are checked against the target
    rig.server.emit("s3://b/x", extra=forwarded(41, 7, path=[A]).target_extra(), source_dag_id=None)

    await rig.replayer.replay(
        deliveries([Envelope(sync="ns/a-to-c", origin=A, event=event(7))]), rig.stop
    )

    assert copies_of(rig, 7) == 1


async def test_two_direct_syncs_between_the_same_instances_stay_two_deliveries() -> None:
    rig = replayer_rig()  # suspect window: the target is asked, and finds the other sync's
    other = Envelope(sync="ns/a-to-c-2", origin=A, event=event(7)).target_extra()
    rig.server.emit("s3://b/x", extra=other, source_dag_id=None)

    await rig.replayer.replay(
        deliveries([Envelope(sync="ns/a-to-c", origin=A, event=event(7))]), rig.stop
    )

    assert copies_of(rig, 7) == 2


async def test_a_forwarded_delivery_costs_one_listing_per_asset_per_batch() -> None:
    rig = replayer_rig()
    rig.replayer._suspect_left = 0
    batch = deliveries([forwarded(40 + i, i, path=[A]) for i in range(5)])

    await rig.replayer.replay(batch, rig.stop)

    lists = [r for r in rig.server.requests if r[0] == "list_events"]
    assert len(lists) == 1
    assert sorted(copies_of(rig, i) for i in range(5)) == [1] * 5


async def test_coalesce_writes_one_event_per_origin_run() -> None:
    rig = test_replayer.Rig(url=C, delivery={"mode": "coalesce", "window": "1s"})
    rig.replayer._suspect_left = 0
    native = [Envelope(sync="ns/b-to-c", origin=B, event=event(i)) for i in (1, 2)]
    from_a = [forwarded(40 + i, i, path=[A]) for i in (3, 4)]

    await rig.replayer.replay(deliveries([*native, *from_a]), rig.stop)

    markers = sorted(rig.markers(), key=lambda m: m.origin)
    assert [(m.origin, m.event_ids) for m in markers] == [(A, (3, 4)), (B, (1, 2))]


def test_a_parked_forwarded_copy_keeps_its_origin_key() -> None:
    envelope = forwarded(41, 7, path=[A])
    assert key_of(parked_event(envelope, T0)) == envelope.marker().key == (A, 7, "ns/b-to-c")


def test_target_copies_rule() -> None:
    copies = TargetCopies()
    copies.add(Envelope(sync="ns/a-to-c", origin=A, event=event(7)).marker())
    direct_again = Envelope(sync="ns/a-to-c", origin=A, event=event(7)).marker()
    other_sync = Envelope(sync="ns/a-to-c-2", origin=A, event=event(7)).marker()
    assert copies.holds(direct_again) == "own"
    assert copies.holds(other_sync) is None
    assert copies.holds(forwarded(41, 7, path=[A]).marker()) == "other_path"
    assert copies.holds(forwarded(42, 8, path=[A]).marker()) is None
