"""`spec.dagRuns`: completion ids, selectors, the completions cursor and poller, over fakes.

The fake source answers the two listings as Airflow does: DAG runs ordered by ``end_date``
(3.x with a tie-breaker), task instances ordered in 3.x and in no useful order in 2.x, only
finished rows (``end_date_gte``), in the states asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from airflow_asset_sync.api.events import Marker, SourceEvent
from airflow_asset_sync.api.spec import DagRunSelector, Endpoint, SyncSpec
from airflow_asset_sync.api.status import SourceStatus
from airflow_asset_sync.clients.airflow.base import (
    AirflowClient,
    Completion,
    CompletionPage,
    CompletionQuery,
    RunSource,
    Unavailable,
)
from airflow_asset_sync.worker.channel import InProcessChannel
from airflow_asset_sync.worker.metrics import WorkerMetrics
from airflow_asset_sync.worker.offsets import FileOffsetStore
from airflow_asset_sync.worker.pipeline import SyncWorker
from airflow_asset_sync.worker.runs.cursor import CompletionCursor
from airflow_asset_sync.worker.runs.ids import completion_event, completion_id, matches
from airflow_asset_sync.worker.runs.poller import CompletionPoller, CompletionSettings

from .fakes import T0, FakeAirflow, FakeClient, FakeClock, FakePublisher, MemoryStore

Version = Literal["v1", "v2"]
INSTANCE = "legacy"


def sel(dag_id: str = "orders_*", **kw: Any) -> DagRunSelector:
    return DagRunSelector.model_validate(
        {"dagId": dag_id, "asset": "x-dagrun://{instance}/{dag_id}", **kw}
    )


class FakeRuns:
    """A source's finished runs and task instances, listed as each API version lists them."""

    def __init__(self, api_version: Version = "v2", page_limit: int = 100) -> None:
        self.api_version: Version = api_version
        self.page_limit = page_limit
        self.runs: list[Completion] = []
        self.tasks: list[Completion] = []
        self.run_lookups = 0
        #: Runs not finished yet (not listed): their tasks may have ended already.
        self.running: list[Completion] = []
        self.failures: list[Exception] = []

    def finish(
        self,
        dag_id: str,
        run_id: str,
        at: float,
        *,
        state: str = "success",
        task_id: str | None = None,
        conf: dict[str, Any] | None = None,
    ) -> Completion:
        row = Completion(
            dag_id=dag_id,
            run_id=run_id,
            state=state,
            end_date=T0 + timedelta(seconds=at),
            logical_date=T0,
            conf=(conf or {"run": run_id}) if task_id is None else None,
            task_id=task_id,
            map_index=-1 if task_id is not None else None,
        )
        (self.tasks if task_id else self.runs).append(row)
        return row

    def _page(
        self, rows: list[Completion], query: CompletionQuery, ordered: bool
    ) -> CompletionPage:
        if self.failures:
            raise self.failures.pop(0)
        lower = query.end_date_gte
        found = [
            r for r in rows if r.state in query.states and (lower is None or r.end_date >= lower)
        ]
        if ordered:
            found.sort(key=lambda r: r.end_date, reverse=query.descending)
        else:
            found.reverse()  # the database's order: anything but sorted
        limit = min(query.limit, self.page_limit)
        return CompletionPage(
            rows=found[query.offset : query.offset + limit], total_entries=len(found)
        )

    async def list_dag_runs(self, query: CompletionQuery) -> CompletionPage:
        return self._page(self.runs, query, ordered=True)

    async def list_task_instances(self, query: CompletionQuery) -> CompletionPage:
        return self._page(self.tasks, query, ordered=self.api_version == "v2")

    async def dag_run_conf(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        self.run_lookups += 1
        for run in [*self.runs, *self.running]:
            if (run.dag_id, run.run_id) == (dag_id, run_id):
                return run.conf
        return None


def test_the_fake_is_a_run_source() -> None:
    assert isinstance(FakeRuns(), RunSource)


# -- ids and selectors ---------------------------------------------------------------------


def test_completion_ids_are_negative_stable_and_distinct() -> None:
    source = FakeRuns()
    run = source.finish("orders_daily", "r1", 1)
    uri = "x-dagrun://legacy/orders_daily"
    first = completion_id(run, uri)
    assert first == completion_id(replace(run), uri)  # stable: the same completion read again
    assert -(2**63) <= first < 0  # never an asset event id (those are positive)
    others = {
        completion_id(replace(run, run_id="r2"), uri),
        completion_id(replace(run, end_date=run.end_date + timedelta(seconds=1)), uri),
        completion_id(run, uri + "/other"),
        completion_id(replace(run, task_id="load", map_index=-1), uri),
        completion_id(replace(run, task_id="load", map_index=0), uri),
        completion_id(replace(run, dag_id="orders_weekly"), uri),
    }
    assert first not in others
    assert len(others) == 6


def test_a_completion_event_carries_the_run_for_the_consumer() -> None:
    run = FakeRuns().finish("orders_daily", "manual__1", 2, conf={"day": "2026-12-01"})
    event = completion_event(run, sel(), instance=INSTANCE, conf=run.conf)
    assert event.uri == "x-dagrun://legacy/orders_daily"
    assert event.timestamp == run.end_date
    assert event.extra == {
        "completion": "dag_run",
        "dag_id": "orders_daily",
        "run_id": "manual__1",
        "state": "success",
        "logical_date": T0.isoformat(),
        "end_date": run.end_date.isoformat(),
        "conf": {"day": "2026-12-01"},
    }
    assert (event.source_dag_id, event.source_run_id) == ("orders_daily", "manual__1")


def test_selectors_match_glob_state_and_task() -> None:
    source = FakeRuns()
    run = source.finish("orders_daily", "r1", 1)
    failed = source.finish("orders_daily", "r2", 2, state="failed")
    task = source.finish("orders_daily", "r1", 3, task_id="load")
    assert matches(sel(), run)
    assert not matches(sel("billing*"), run)
    assert not matches(sel(), failed)  # default states: success only
    assert matches(sel(states=["success", "failed"]), failed)
    assert not matches(sel(), task)  # a run selector takes runs only
    assert matches(sel(taskId="load", asset="x://{dag_id}/{task_id}"), task)
    assert not matches(sel(taskId="other", asset="x://{task_id}"), task)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"asset": "x://{dag}"}, "unknown placeholder(s) {dag}"),
        ({"asset": "x://{dag_id"}, "unmatched"),
        ({"asset": "x://{dag_id}/{task_id}"}, "need taskId"),
        ({"asset": "x://{map_index}"}, "need taskId"),
        ({"asset": "x://a", "states": ["running"]}, "success"),
        ({"asset": "x://a", "states": []}, "at least 1"),
    ],
)
def test_bad_selectors_are_refused_naming_the_field(entry: dict[str, Any], message: str) -> None:
    doc = {"source": {"url": "http://a:8080"}, "targets": [{"name": "b", "url": "http://b:8080"}]}
    with pytest.raises(ValidationError) as caught:
        SyncSpec.model_validate({**doc, "dagRuns": [{"dagId": "x", **entry}]})
    text = str(caught.value)
    assert "dagRuns.0" in text
    assert message in text


def test_a_template_fills_every_placeholder() -> None:
    selector = sel(taskId="load", asset="x://{instance}/{dag_id}/{run_id}/{task_id}/{map_index}")
    assert (
        selector.asset_uri(instance="i", dag_id="d", run_id="r", task_id="load", map_index=2)
        == "x://i/d/r/load/2"
    )


# -- the cursor and the poller --------------------------------------------------------------


class Rig:
    def __init__(
        self,
        source: FakeRuns,
        selectors: Sequence[DagRunSelector],
        *,
        start: str = "earliest",
        max_batch: int = 1000,
        max_publish: int = 100,
    ) -> None:
        self.source = source
        self.selectors = list(selectors)
        self.start = start
        self.max_batch = max_batch
        self.max_publish = max_publish
        self.publisher = FakePublisher()
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.gate = asyncio.Lock()
        self.poller = self.new_poller(SourceStatus())

    def new_poller(self, status: SourceStatus) -> CompletionPoller:
        """A poller as a restarted worker builds it: the status as it was last saved."""
        return CompletionPoller(
            settings=CompletionSettings(
                sync="data/a-to-b",
                origin=INSTANCE,
                poll_interval_s=1.0,
                start_from=SyncSpec.model_validate(
                    {
                        "source": {"url": "http://a:8080"},
                        "targets": [{"name": "b", "url": "http://b:8080"}],
                        "startFrom": self.start,
                    }
                ).start,
                overlap=timedelta(seconds=5),
                max_publish=self.max_publish,
            ),
            cursor=CompletionCursor(
                self.source, self.selectors, instance=INSTANCE, max_batch=self.max_batch
            ),
            publisher=self.publisher,
            store=self.store,
            status=status,
            clock=self.clock,
            metrics=WorkerMetrics(),
            gate=self.gate,
        )

    def restart(self) -> None:
        self.poller = self.new_poller(self.store.status.source.model_copy(deep=True))

    @property
    def published(self) -> list[SourceEvent]:
        return [e.event for e in self.publisher.published]

    def run_ids(self) -> list[str | None]:
        return [e.source_run_id for e in self.published]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_each_finished_run_is_published_once_across_polls_and_restarts(
    version: Version,
) -> None:
    source = FakeRuns(version)
    rig = Rig(source, [sel()])
    source.finish("orders_daily", "r1", 1)
    source.finish("orders_daily", "r2", 2)
    source.finish("billing", "b1", 2.5)  # no selector takes it
    source.finish("orders_daily", "r3", 3, state="failed")  # not a state asked for
    await rig.poller.poll_once()
    await rig.poller.poll_once()  # the overlap window is re-read: nothing new
    assert rig.run_ids() == ["r1", "r2"]
    saved = rig.store.status.source.runs
    assert saved is not None
    assert saved.checkpoint.timestamp == T0 + timedelta(seconds=2)
    assert len(saved.checkpoint.seen_ids) == 2
    assert all(i < 0 for i in saved.checkpoint.seen_ids)
    assert saved.published == 2

    source.finish("orders_daily", "r4", 4)  # finishes while the worker is down
    rig.restart()
    await rig.poller.poll_once()
    await rig.poller.poll_once()
    assert rig.run_ids() == ["r1", "r2", "r4"]
    assert {e.uri for e in rig.published} == {"x-dagrun://legacy/orders_daily"}
    assert [e.extra["conf"] for e in rig.published] == [{"run": r} for r in ("r1", "r2", "r4")]


async def test_a_run_that_commits_late_inside_the_window_is_still_published() -> None:
    source = FakeRuns()
    rig = Rig(source, [sel()])
    source.finish("orders_daily", "r2", 10)
    await rig.poller.poll_once()
    source.finish("orders_daily", "r1", 8)  # ended earlier, visible only now
    await rig.poller.poll_once()
    assert rig.run_ids() == ["r2", "r1"]


async def test_a_crash_between_publish_and_checkpoint_is_not_republished_from_kafka() -> None:
    source = FakeRuns()
    rig = Rig(source, [sel()])
    run = source.finish("orders_daily", "r1", 1)
    rig.publisher.keys = {completion_id(run, "x-dagrun://legacy/orders_daily"), 5}
    await rig.poller.poll_once()
    assert rig.published == []  # already in the transport: checkpointed past, not sent
    assert rig.store.status.source.runs is not None
    assert len(rig.store.status.source.runs.checkpoint.seen_ids) == 1


async def test_start_from_latest_skips_what_had_finished_before() -> None:
    source = FakeRuns()
    source.finish("orders_daily", "old1", 1)
    source.finish("orders_daily", "old2", 2)
    rig = Rig(source, [sel()], start="latest")
    await rig.poller.poll_once()
    assert rig.published == []
    source.finish("orders_daily", "new", 3)
    await rig.poller.poll_once()
    assert rig.run_ids() == ["new"]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_task_completions_carry_their_runs_conf_looked_up_once(version: Version) -> None:
    source = FakeRuns(version)
    rig = Rig(source, [sel(taskId="load", asset="x://{dag_id}/{task_id}")], max_batch=2)
    source.finish("orders_daily", "r1", 1, conf={"day": 1})
    for i in range(3):
        source.finish("orders_daily", "r1", 1 + i, task_id="load")  # retried: ends again
    source.finish("orders_daily", "r1", 2, task_id="other")
    for _ in range(3):
        await rig.poller.poll_once()
    assert [e.uri for e in rig.published] == ["x://orders_daily/load"] * 3
    assert [e.timestamp for e in rig.published] == sorted(e.timestamp for e in rig.published)
    assert {e.extra["task_id"] for e in rig.published} == {"load"}
    assert all(e.extra["conf"] == {"day": 1} for e in rig.published)
    assert source.run_lookups == 1


async def test_a_task_that_ends_before_its_run_still_carries_the_runs_conf() -> None:
    source = FakeRuns("v2")
    rig = Rig(source, [sel(taskId="load", asset="x://{dag_id}/{task_id}")])
    run = Completion(
        dag_id="orders_daily",
        run_id="r1",
        state="running",
        end_date=T0,  # unused: a running run is not listed
        conf={"day": 2},
    )
    source.running.append(run)  # found on 3.3: the task's end is read while its run runs
    source.finish("orders_daily", "r1", 1, task_id="load")
    await rig.poller.poll_once()
    assert [e.extra["conf"] for e in rig.published] == [{"day": 2}]


async def test_a_backlog_is_read_in_bounded_batches_and_published_in_order() -> None:
    source = FakeRuns(page_limit=10)
    rig = Rig(source, [sel(), sel("orders_daily", taskId="t", asset="x://t")], max_batch=25)
    rig.max_publish = 7
    rig.poller = rig.new_poller(SourceStatus())
    for i in range(60):
        source.finish("orders_daily", f"r{i:02d}", i)
        source.finish("orders_daily", f"r{i:02d}", i + 0.5, task_id="t")
    more = True
    reads = 0
    while more:
        more = await rig.poller.poll_once()
        reads += 1
    await rig.poller.poll_once()
    assert reads > 2  # the bound cut the backlog into several reads
    assert max(len(b) for b in rig.publisher.batches) <= 7
    assert len(rig.published) == 120
    assert len({e.id for e in rig.published}) == 120
    assert [e.timestamp for e in rig.published] == sorted(e.timestamp for e in rig.published)


async def test_two_selectors_publish_one_run_under_two_assets() -> None:
    source = FakeRuns()
    rig = Rig(source, [sel(), sel("*", asset="x-all://{dag_id}/{run_id}")])
    source.finish("orders_daily", "r1", 1)
    await rig.poller.poll_once()
    assert sorted(e.uri for e in rig.published) == [
        "x-all://orders_daily/r1",
        "x-dagrun://legacy/orders_daily",
    ]
    assert len({e.id for e in rig.published}) == 2


async def test_a_failed_read_is_retried_and_reported_and_nothing_moves() -> None:
    source = FakeRuns()
    rig = Rig(source, [sel()])
    source.finish("orders_daily", "r1", 1)
    source.failures.append(Unavailable("source down"))
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    while not rig.published:
        await rig.clock.advance(1)
    stop.set()
    await rig.clock.advance(2)
    await task
    assert rig.run_ids() == ["r1"]
    assert rig.poller.status.last_error is None  # cleared by the read that worked


async def test_publish_and_checkpoint_happen_under_the_shared_gate() -> None:
    source = FakeRuns()
    rig = Rig(source, [sel()])
    source.finish("orders_daily", "r1", 1)
    await rig.gate.acquire()  # the events poller is between a publish and its checkpoint
    poll = asyncio.create_task(rig.poller.poll_once())
    for _ in range(20):
        await asyncio.sleep(0)
    assert rig.published == []
    rig.gate.release()
    await poll
    assert rig.run_ids() == ["r1"]


def test_status_without_selectors_has_no_runs_entry() -> None:
    assert "runs" not in SourceStatus().to_patch()
    assert SourceStatus().to_merge_patch()["runs"] is None


# -- the whole worker ----------------------------------------------------------------------


class RunsClient(FakeClient):
    """A source client that lists asset events (`FakeAirflow`) and completions (`FakeRuns`)."""

    def __init__(self, server: FakeAirflow, runs: FakeRuns) -> None:
        super().__init__(server)
        self.runs = runs

    async def list_dag_runs(self, query: CompletionQuery) -> CompletionPage:
        return await self.runs.list_dag_runs(query)

    async def list_task_instances(self, query: CompletionQuery) -> CompletionPage:
        return await self.runs.list_task_instances(query)

    async def dag_run_conf(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        return await self.runs.dag_run_conf(dag_id, run_id)


async def test_the_worker_writes_completions_into_the_target_once_across_a_restart(
    tmp_path: Path,
) -> None:
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v1")
    runs = FakeRuns("v2")
    uri = "x-dagrun://team-a/orders_daily"
    target.add_asset(uri)  # the consumer DAG in the target made it
    target.add_asset("s3://data/x")
    clock = FakeClock()

    async def factory(endpoint: Endpoint) -> AirflowClient:
        if endpoint.url == "http://a:8080":
            return RunsClient(source, runs)
        return target.client()

    sync_spec = SyncSpec.model_validate(
        {
            "source": {"url": "http://a:8080"},
            "targets": [{"name": "b", "url": "http://b:8080"}],
            "startFrom": "earliest",
            "dagRuns": [{"dagId": "orders_*", "asset": "x-dagrun://team-a/{dag_id}"}],
        }
    )
    store = FileOffsetStore(tmp_path / "offsets.json")

    def worker() -> SyncWorker:
        names = ["b"]
        channel = InProcessChannel(targets=names)
        return SyncWorker(
            spec=sync_spec,
            sync="team/sync",
            client_factory=factory,
            publisher=channel,
            subscriptions={n: channel.subscription(n) for n in names},
            store=store,
            clock=clock,
        )

    def ours() -> list[Marker]:
        found = [Marker.from_extra(e.extra) for e in target.events_of(uri)]
        return [m for m in found if m is not None]

    async def until(condition: Any, what: str) -> None:
        for _ in range(200):
            if condition():
                return
            await clock.advance(0.5)
        raise AssertionError(f"never: {what}")

    first = worker()
    task = asyncio.create_task(first.run())
    runs.finish("orders_daily", "r1", 1, conf={"day": 1})
    source.emit("s3://data/x")  # asset events flow beside the completions
    await until(lambda: len(ours()) == 1 and len(target.events_of("s3://data/x")) == 1, "r1")
    await first.stop()
    await task

    runs.finish("orders_daily", "r2", 2)
    second = worker()
    task = asyncio.create_task(second.run())
    await until(lambda: len(ours()) == 2, "r2 after the restart")
    for _ in range(6):  # more polls over the same window
        await clock.advance(1.0)
    await second.stop()
    await task

    assert [e.extra["run_id"] for e in target.events_of(uri)] == ["r1", "r2"]
    assert target.events_of(uri)[0].extra["conf"] == {"day": 1}
    assert all(m.event_id < 0 and m.origin == "http://a:8080" for m in ours())
    saved = await FileOffsetStore(tmp_path / "offsets.json").load()
    assert saved.source.runs is not None
    assert saved.source.runs.published == 2
    assert saved.source.runs.checkpoint.initialized
    assert saved.source.events_published == 1
    assert second.metrics.value("aas_completions_published_total", {"kind": "dag_run"}) == 1
