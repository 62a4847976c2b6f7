"""FileOffsetStore: round trip, per-target replace, atomic writes, corrupt files refused."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_asset_sync.api.status import Checkpoint, SourceStatus, TargetStatus
from airflow_asset_sync.worker.offsets import FileOffsetStore, OffsetStore, StatusFileCorrupt

TS = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def test_missing_file_loads_empty_status(tmp_path: Path) -> None:
    status = await FileOffsetStore(tmp_path / "offsets.json").load()
    assert status.source.checkpoint.initialized is False
    assert status.targets == []


async def test_round_trip_keeps_checkpoint_and_counters(tmp_path: Path) -> None:
    path = tmp_path / "state" / "offsets.json"
    store: OffsetStore = FileOffsetStore(path)
    await store.load()
    source = SourceStatus(
        checkpoint=Checkpoint(timestamp=TS, seen_ids=[3, 4], initialized=True),
        events_published=7,
    )
    await store.save_source(source)
    await store.save_target(TargetStatus(name="b", events_replayed=2))
    await store.save_target(TargetStatus(name="a", events_replayed=5))
    await store.save_target(TargetStatus(name="b", events_replayed=3))  # replaces b only

    loaded = await FileOffsetStore(path).load()
    assert loaded.source.checkpoint == source.checkpoint
    assert loaded.source.checkpoint.timestamp == TS  # microseconds and zone survive
    assert loaded.source.events_published == 7
    assert [(t.name, t.events_replayed) for t in loaded.targets] == [("a", 5), ("b", 3)]
    # camelCase on disk, like the status subresource
    assert "seenIds" in json.loads(path.read_text())["source"]["checkpoint"]


async def test_saved_snapshot_is_not_aliased(tmp_path: Path) -> None:
    store = FileOffsetStore(tmp_path / "o.json")
    source = SourceStatus(events_published=1)
    await store.save_source(source)
    source.events_published = 99  # later in-memory changes are not on disk until saved
    assert (await FileOffsetStore(tmp_path / "o.json").load()).source.events_published == 1


async def test_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.json"
    store = FileOffsetStore(path)
    await store.save_source(SourceStatus(events_published=1))
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        await store.save_source(SourceStatus(events_published=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["o.json"]


async def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text("{not json")
    with pytest.raises(StatusFileCorrupt):
        await FileOffsetStore(path).load()


async def test_targets_removed_from_the_spec_are_pruned_at_load(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    store = FileOffsetStore(path)
    await store.save_target(TargetStatus(name="gone", lag_seconds=31.0))
    await store.save_target(TargetStatus(name="b", lag_seconds=2.0))

    loaded = await FileOffsetStore(path).load(targets={"b", "c"})
    assert [t.name for t in loaded.targets] == ["b"]
    on_disk = json.loads(path.read_text())
    assert [t["name"] for t in on_disk["targets"]] == ["b"]
    assert on_disk["lagSeconds"] == 2.0  # the Lag column: the remaining targets' largest
