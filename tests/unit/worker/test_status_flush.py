"""`SyncWorker.flush`: no status write when nothing changed; a quiet stop on a deleted sync."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from airflow_asset_sync.api.status import RunsStatus, SourceStatus, TargetStatus, WorkerStatus
from airflow_asset_sync.worker.pipeline import SyncWorker, WorkerOptions

from .fakes import FakeAirflow, MemoryStore
from .test_pipeline import A, B, World, spec

T0 = datetime(2024, 5, 1, tzinfo=UTC)


class Refused(Exception):
    """What the kube client raises: an exception with the HTTP `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class RefusingStore(MemoryStore):
    def __init__(self, status: int) -> None:
        super().__init__()
        self.refusal = status

    async def save_source(self, source: SourceStatus) -> None:
        raise Refused(self.refusal)


def _worker(store: MemoryStore, *, poll_time_refresh: float = 60.0) -> SyncWorker:
    world = World(**{A: FakeAirflow(api_version="v2")})
    options = WorkerOptions(poll_time_refresh=poll_time_refresh)
    worker, _ = world.worker(spec(A, {"name": "b", "url": B}), store=store, options=options)
    return worker


def _loaded(worker: SyncWorker) -> WorkerStatus:
    """What `run` does at start: load the status, and remember it as saved."""
    status = WorkerStatus(targets=[TargetStatus(name="b")])
    status.source.last_poll_time = T0
    worker._status = status
    worker._saved = status.model_dump(mode="json")
    return status


async def test_an_idle_flush_writes_nothing() -> None:
    store = MemoryStore()
    worker = _worker(store)
    _loaded(worker)
    for _ in range(5):
        await worker.flush()
    assert store.source_saves == []
    assert store.target_saves == []


async def test_a_change_is_written_once() -> None:
    store = MemoryStore()
    worker = _worker(store)
    status = _loaded(worker)
    status.target("b").events_replayed = 3
    await worker.flush()
    await worker.flush()
    assert len(store.source_saves) == 1
    assert [t.events_replayed for t in store.target_saves] == [3]


async def test_last_poll_time_alone_is_refreshed_only_now_and_then() -> None:
    store = MemoryStore()
    worker = _worker(store, poll_time_refresh=300.0)
    status = _loaded(worker)
    status.source.last_poll_time = T0 + timedelta(seconds=10)
    await worker.flush()
    assert store.source_saves == []  # only lastPollTime moved, and not by much
    status.source.last_poll_time = T0 + timedelta(seconds=300)
    await worker.flush()
    assert len(store.source_saves) == 1
    status.source.last_poll_time = T0 + timedelta(seconds=310)
    await worker.flush()
    assert len(store.source_saves) == 1  # measured from the last write


async def test_the_completions_poll_time_alone_is_not_worth_a_write() -> None:
    store = MemoryStore()
    worker = _worker(store, poll_time_refresh=300.0)
    status = _loaded(worker)
    status.source.runs = RunsStatus(last_poll_time=T0)
    worker._saved = status.model_dump(mode="json")
    status.source.runs.last_poll_time = T0 + timedelta(seconds=10)  # spec.dagRuns polls
    await worker.flush()
    assert store.source_saves == []  # an idle sync with dagRuns does not patch every 10 s
    status.source.runs.published = 1
    await worker.flush()
    assert len(store.source_saves) == 1


async def test_a_failed_flush_is_retried_at_the_next_one() -> None:
    store = RefusingStore(503)
    worker = _worker(store)
    status = _loaded(worker)
    status.source.events_published = 1
    await worker.flush()
    assert worker._saved is not None
    assert worker._saved["source"]["events_published"] == 0  # not marked saved
    store.save_source = MemoryStore.save_source.__get__(store)  # type: ignore[method-assign]
    await worker.flush()
    assert len(store.source_saves) == 1


@pytest.mark.parametrize("refusal", [403, 404])
async def test_a_refused_final_flush_while_stopping_is_expected(
    refusal: int, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _worker(RefusingStore(refusal))
    status = _loaded(worker)
    status.source.events_published = 1
    worker._stopping = True
    with caplog.at_level(logging.DEBUG, logger="airflow_asset_sync.worker.pipeline"):
        await worker.flush()
    records = [r for r in caplog.records if r.name == "airflow_asset_sync.worker.pipeline"]
    assert records
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in records)
    assert "being deleted" in records[0].getMessage()


async def test_a_refused_flush_while_running_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = _worker(RefusingStore(403))
    status = _loaded(worker)
    status.source.events_published = 1
    with caplog.at_level(logging.INFO, logger="airflow_asset_sync.worker.pipeline"):
        await worker.flush()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
