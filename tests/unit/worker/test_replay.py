"""Replay on demand (`spec.replay`): the model, the trigger, dedup by marker, status.

End to end over fakes (`SyncWorker`, in-process channel, fake clock): a day of source
history, a target holding half of it as copies buried under newer events (beyond the pages
the restart check reads); a replay fills the other half, once each. Then the same id does
nothing, a new id re-reads and writes nothing, bad input fails with nothing written.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from airflow_asset_sync.api.events import MARKER_KEY, Envelope, Marker, ReplayTag
from airflow_asset_sync.api.spec import Replay, SyncSpec
from airflow_asset_sync.api.status import Checkpoint, ReplayStatus, WorkerStatus
from airflow_asset_sync.clients.airflow.base import EventQuery
from airflow_asset_sync.worker.offsets import FileOffsetStore
from airflow_asset_sync.worker.pipeline import SyncWorker
from airflow_asset_sync.worker.replay import due, window_problem
from airflow_asset_sync.worker.status_store import StatusOffsetStore

from .fakes import T0, FakeAirflow, MemoryStore, Version, deliveries, envelope
from .test_pipeline import A, B, World
from .test_replayer import Rig, source_event

URI = "s3://b/orders"
SYNC = "team/sync"
HOURS = 24
#: Newer events on the target asset than the copies: more than the restart check's 2 pages.
FILLER = 250


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    """Every record is built, so a log call that cannot be (a reserved `extra` key) fails."""
    caplog.set_level(logging.DEBUG, logger="airflow_asset_sync")


def replay_spec(replay: dict[str, Any] | None, **kw: Any) -> SyncSpec:
    body: dict[str, Any] = {
        "source": {"url": A},
        "targets": [{"name": "b", "url": B}],
        "startFrom": "earliest",
        **kw,
    }
    if replay is not None:
        body["replay"] = replay
    return SyncSpec.model_validate(body)


def iso(hours_before_t0: float) -> str:
    return (T0 - timedelta(hours=hours_before_t0)).isoformat()


# -- the model ---------------------------------------------------------------------------------


def test_replay_model_accepts_a_window_and_names_the_field_of_a_bad_one() -> None:
    ok = Replay.model_validate({"id": "r1", "from": "2024-05-01T00:00:00Z"})
    assert ok.from_.isoformat() == "2024-05-01T00:00:00+00:00" and ok.until is None
    assert ok.model_dump(mode="json", by_alias=True)["from"] == "2024-05-01T00:00:00Z"

    with pytest.raises(pydantic.ValidationError) as backwards:
        Replay.model_validate(
            {"id": "r1", "from": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}
        )
    (error,) = backwards.value.errors()
    assert error["loc"] == ("until",)
    assert (
        "spec.replay.until 2024-05-01T00:00:00+00:00 is not after spec.replay.from"
        in (error["msg"])
    )
    with pytest.raises(pydantic.ValidationError, match=r"spec\.replay\.from .* needs a time zone"):
        Replay.model_validate({"id": "r1", "from": "2024-05-01T00:00:00"})
    for bad_id in ("", "x" * 64):
        with pytest.raises(pydantic.ValidationError):
            Replay.model_validate({"id": bad_id, "from": "2024-05-01T00:00:00Z"})
    # A future `from` is the worker's to refuse (it knows "now"), not the model's.
    future = Replay.model_validate({"id": "r1", "from": "2999-01-01T00:00:00Z"})
    problem = window_problem(future, T0)
    assert problem is not None
    assert problem.startswith("spec.replay.from 2999-01-01T00:00:00+00:00 is in the future")
    assert window_problem(ok, T0) is None


def test_a_replay_is_due_for_a_new_id_or_one_left_running() -> None:
    replay = Replay.model_validate({"id": "r1", "from": iso(25)})

    def status(id_: str, phase: str) -> ReplayStatus:
        return ReplayStatus.model_validate({"id": id_, "from": iso(25), "phase": phase})

    assert due(None, None) is False
    assert due(None, status("r1", "Running")) is False
    assert due(replay, None) is True
    assert due(replay, status("r0", "Succeeded")) is True
    assert due(replay, status("r1", "Running")) is True  # the worker stopped mid-way
    assert due(replay, status("r1", "Succeeded")) is False
    assert due(replay, status("r1", "Failed")) is False


def test_envelope_replay_tag_is_optional_on_the_wire() -> None:
    live = envelope(source_event(1))
    assert "replay" not in json.loads(live.to_bytes())  # live messages unchanged
    tagged = live.model_copy(update={"replay": ReplayTag(id="r1", from_=T0)})
    raw = json.loads(tagged.to_bytes())
    assert raw["replay"] == {"id": "r1", "from": "2026-01-01T00:00:00Z"}
    assert Envelope.from_bytes(tagged.to_bytes()).replay == ReplayTag(id="r1", from_=T0)
    assert Envelope.from_bytes(live.to_bytes()).replay is None


# -- end to end --------------------------------------------------------------------------------


class History:
    """A source with a day of events and a target holding every other one as a copy."""

    def __init__(self, source_version: Version = "v2", target_version: Version = "v2") -> None:
        self.source = FakeAirflow(api_version=source_version)
        self.target = FakeAirflow(api_version=target_version)
        self.target.add_asset(URI)
        self.events = [
            self.source.emit(URI, at=T0 - timedelta(hours=HOURS) + timedelta(hours=i, seconds=1))
            for i in range(HOURS)
        ]
        for event in self.events[::2]:  # the half the target has, written long ago
            marker = Marker(origin=A, event_id=event.id, timestamp=event.timestamp, sync=SYNC)
            self.target.emit(
                URI,
                at=event.timestamp + timedelta(seconds=30),
                extra={MARKER_KEY: marker.to_json(), "from_rest_api": True},
                source_dag_id=None,
            )
        for i in range(FILLER):  # newer events of the asset, not copies
            self.target.emit(URI, at=T0 - timedelta(minutes=30) + timedelta(seconds=i))
        self.world = World(**{A: self.source, B: self.target})
        newest = self.events[-1]
        checkpoint = Checkpoint(timestamp=newest.timestamp, seen_ids=[newest.id], initialized=True)
        self.store = MemoryStore(WorkerStatus(source={"checkpoint": checkpoint}))

    def copies(self) -> Counter[int]:
        counts: Counter[int] = Counter()
        for row in self.target.rows:
            marker = Marker.from_extra(row.extra)
            if marker is not None and (marker.origin, marker.sync) == (A, SYNC):
                counts[marker.event_id] += 1
        return counts

    def worker(self, sync_spec: SyncSpec) -> SyncWorker:
        worker, _ = self.world.worker(sync_spec, store=self.store, sync=SYNC)
        return worker

    async def run(self, sync_spec: SyncSpec, *, until: str = "done") -> WorkerStatus:
        """Run a worker until its replay is no longer Running (or, `idle`, a few seconds)."""
        worker = self.worker(sync_spec)
        task = asyncio.create_task(worker.run())
        for _ in range(400):
            replay = worker.status.replay if worker.status is not None else None
            if until == "done" and replay is not None and replay.phase != "Running":
                break
            await self.world.clock.advance(0.5)
            await asyncio.sleep(0.001)
        else:
            if until == "done":
                raise AssertionError(f"replay still running: {worker.status}")
        await worker.stop()
        await task
        return self.store.status

    def window_reads(self, since: str) -> int:
        """Source listings that started at `since` (a 3.x replay's reads)."""
        return sum(
            1
            for kind, query in self.source.requests
            if kind == "list_events"
            and isinstance(query, EventQuery)
            and query.timestamp_gte is not None
            and query.timestamp_gte.isoformat() == since
        )


@pytest.mark.parametrize(("source_version", "target_version"), [("v2", "v2"), ("v1", "v1")])
async def test_replay_fills_the_missing_half_once_and_the_same_id_does_nothing(
    source_version: Version, target_version: Version
) -> None:
    history = History(source_version, target_version)
    assert set(history.copies()) == {e.id for e in history.events[::2]}
    first = replay_spec({"id": "r1", "from": iso(25)})

    status = await history.run(first)

    assert history.copies() == Counter({e.id: 1 for e in history.events})  # all, once each
    replay = status.replay
    assert replay is not None
    assert (replay.id, replay.phase) == ("r1", "Succeeded")
    assert (replay.events_read, replay.events_published) == (HOURS, HOURS)
    assert replay.until == history.events[-1].timestamp  # the live checkpoint at its start
    assert replay.started_at is not None and replay.finished_at is not None
    (target,) = status.targets
    assert target.events_replayed == HOURS // 2
    assert target.events_deduplicated == HOURS // 2
    rows = len(history.target.rows)

    # The same id again (a GitOps tool re-applying the spec): nothing read, nothing written.
    reads = history.window_reads(iso(25))
    again = await history.run(first, until="idle")
    assert again.replay == replay
    assert len(history.target.rows) == rows
    assert history.window_reads(iso(25)) == reads  # (3.x: no listing from `from` again)

    # A new id re-reads the window and writes nothing new.
    second = await history.run(replay_spec({"id": "r2", "from": iso(25)}))
    assert second.replay is not None
    assert (second.replay.id, second.replay.phase) == ("r2", "Succeeded")
    assert second.replay.events_read == HOURS
    assert len(history.target.rows) == rows
    assert history.copies() == Counter({e.id: 1 for e in history.events})


async def test_replay_honours_filters_and_until() -> None:
    history = History()
    other = history.source.emit("s3://b/scratch", at=T0 - timedelta(hours=5))
    sync_spec = replay_spec(
        {"id": "r1", "from": iso(25), "until": iso(12)},
        assets={"exclude": [{"glob": "*scratch*"}]},
    )
    status = await history.run(sync_spec)
    assert status.replay is not None and status.replay.phase == "Succeeded"
    in_window = [e for e in history.events if e.timestamp <= T0 - timedelta(hours=12)]
    assert status.replay.events_read == len(in_window)
    assert set(history.copies()) == {e.id for e in in_window} | {e.id for e in history.events[::2]}
    assert other.id not in history.copies()


async def test_a_future_from_fails_with_the_field_named_and_writes_nothing() -> None:
    history = History()
    rows = len(history.target.rows)
    status = await history.run(
        replay_spec({"id": "r1", "from": (T0 + timedelta(hours=1)).isoformat()})
    )
    replay = status.replay
    assert replay is not None and replay.phase == "Failed"
    assert replay.message is not None
    assert replay.message.startswith("spec.replay.from 2026-01-01T01:00:00+00:00 is in the future")
    assert replay.events_read == replay.events_published == 0
    assert len(history.target.rows) == rows
    assert history.store.replay_saves[-1].phase == "Failed"


async def test_a_target_that_cannot_be_reached_fails_the_replay_with_nothing_written() -> None:
    history = History()
    history.world.down[B] = 10_000  # never connects
    rows = len(history.target.rows)
    status = await history.run(replay_spec({"id": "r1", "from": iso(25)}))
    replay = status.replay
    assert replay is not None and replay.phase == "Failed"
    assert replay.message is not None
    assert "target b cannot be reached" in replay.message
    assert "set a new spec.replay.id to retry" in replay.message
    assert replay.events_published == 0
    assert history.window_reads(iso(25)) == 0  # the source was not read either
    assert len(history.target.rows) == rows


async def test_a_replay_left_running_starts_again_and_one_removed_is_marked_failed() -> None:
    history = History()
    left = ReplayStatus.model_validate(
        {"id": "r1", "from": iso(25), "phase": "Running", "eventsRead": 3}
    )
    history.store.status.replay = left
    status = await history.run(replay_spec({"id": "r1", "from": iso(25)}))
    assert status.replay is not None and status.replay.phase == "Succeeded"
    assert status.replay.events_read == HOURS  # counted afresh
    assert history.copies() == Counter({e.id: 1 for e in history.events})

    history.store.status.replay = left
    removed = await history.run(replay_spec(None), until="idle")
    assert removed.replay is not None and removed.replay.phase == "Failed"
    assert removed.replay.message == "spec.replay was removed before the replay finished"


# -- the replayer --------------------------------------------------------------------------------


async def test_a_live_delivery_after_a_replayed_one_is_not_written_twice() -> None:
    """The live stream and a replay meet in one replayer: keys it wrote for either are
    checked for both, beyond the recent-keys memory (here 1 key)."""
    rig = Rig(options={"recent_keys": 1})
    tag = ReplayTag(id="r1", from_=T0 - timedelta(hours=1))
    replayed = envelope(source_event(1)).model_copy(update={"replay": tag})
    await rig.replayer.replay(deliveries([replayed]), rig.stop)
    await rig.replayer.replay(deliveries([envelope(source_event(2))]), rig.stop)  # evicts 1
    assert [m.event_id for m in rig.markers()] == [1, 2]

    await rig.replayer.replay(deliveries([envelope(source_event(1))]), rig.stop)  # live, late
    assert [m.event_id for m in rig.markers()] == [1, 2]
    assert rig.status.events_deduplicated == 1


async def test_a_replayed_delivery_is_checked_against_every_page_once_per_replay() -> None:
    rig = Rig(options={"dedup_pages": 2})
    old = source_event(1)
    marker = Marker(
        origin="http://source:8080", event_id=1, timestamp=old.timestamp, sync="ns/sync"
    )
    rig.server.emit("s3://b/x", extra={MARKER_KEY: marker.to_json()}, source_dag_id=None)
    for _ in range(FILLER):
        rig.server.emit("s3://b/x")
    tag = ReplayTag(id="r1", from_=T0 - timedelta(hours=1))
    batch = [envelope(source_event(i)).model_copy(update={"replay": tag}) for i in (1, 2, 3)]
    listings_before = len([r for r in rig.server.requests if r[0] == "list_events"])

    await rig.replayer.replay(deliveries(batch), rig.stop)

    assert [m.event_id for m in rig.markers()] == [1, 2, 3]  # 1 was there; 2 and 3 written
    assert rig.status.events_deduplicated == 1
    listings = [r for r in rig.server.requests if r[0] == "list_events"][listings_before:]
    pages = -(-(FILLER + 1) // rig.server.page_limit)
    # One walk of the asset for the replay, plus the restart check of the first deliveries.
    assert len(listings) <= pages + 2


# -- the stores ----------------------------------------------------------------------------------


async def test_stores_keep_the_replay_outcome(tmp_path: Path) -> None:
    outcome = ReplayStatus.model_validate(
        {"id": "r1", "from": iso(25), "phase": "Succeeded", "eventsRead": 24}
    )
    file_store = FileOffsetStore(tmp_path / "offsets.json")
    await file_store.load()
    await file_store.save_replay(outcome)
    assert (await FileOffsetStore(tmp_path / "offsets.json").load()).replay == outcome

    class Kube:
        def __init__(self) -> None:
            self.patches: list[dict[str, Any]] = []

        def get_sync(self, *, namespace: str, name: str) -> dict[str, Any]:
            return {"status": {"replay": outcome.to_patch(), "conditions": []}}

        def patch_sync_status(self, *, namespace: str, name: str, status: Any) -> None:
            self.patches.append(dict(status))

    from airflow_asset_sync.api.spec import ObjectRef

    kube = Kube()
    store = StatusOffsetStore(kube, ObjectRef(namespace="ns", name="s"))  # type: ignore[arg-type]
    assert (await store.load()).replay == outcome
    await store.save_replay(outcome)
    (patch,) = kube.patches
    assert set(patch) == {"replay"}  # the worker's key only: never conditions
    assert patch["replay"]["phase"] == "Succeeded" and patch["replay"]["message"] is None


async def test_a_replay_resends_copies_by_the_forwarding_rule() -> None:
    """A copy in the source (written by another sync) is re-sent like a live one: only if
    the target is off its path (`forwarding`)."""
    history = History()
    elsewhere = "http://c:8080"
    when = T0 - timedelta(hours=5)
    for origin, event_id in ((elsewhere, 901), (B, 902)):
        copy = Marker(origin=origin, event_id=event_id, timestamp=when, sync="x/y", path=(origin,))
        history.source.emit(URI, at=when, extra={MARKER_KEY: copy.to_json()}, source_dag_id=None)

    status = await history.run(replay_spec({"id": "r1", "from": iso(25)}))

    assert status.replay is not None and status.replay.phase == "Succeeded"
    forwarded = [
        m
        for row in history.target.rows
        if (m := Marker.from_extra(row.extra)) is not None and m.forwarded
    ]
    # 901 was born in C: it goes on to B, path (C, A); 902 was born in B: not sent back.
    assert [(m.origin, m.event_id, m.path) for m in forwarded] == [(elsewhere, 901, (elsewhere, A))]
