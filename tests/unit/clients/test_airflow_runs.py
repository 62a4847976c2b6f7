"""The completions listings (`clients.airflow.runs`) against MockTransport fakes of both APIs.

Payload shapes are the ones 2.11.2 (`DAGRunSchema`, `TaskInstanceSchema`) and 3.3.2
(`DAGRunResponse`, `TaskInstanceResponse`) serialise; the query parameters are the ones
each version accepts (2.x validates strictly: an unknown parameter is a 400).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from airflow_asset_sync.clients.airflow.base import BadRequest, CompletionQuery, RunSource
from airflow_asset_sync.clients.airflow.common import ClientBase
from airflow_asset_sync.clients.airflow.http import AirflowHttp, Credentials
from airflow_asset_sync.clients.airflow.runs import parse_completion
from airflow_asset_sync.clients.airflow.v1 import AirflowV1Client
from airflow_asset_sync.clients.airflow.v2 import AirflowV2Client

URL = "http://airflow.test:8080"
T = datetime(2026, 12, 2, 15, 0, 0, 123456, tzinfo=UTC)


def run_row(version: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "dag_run_id": "manual__2026-12-02T15:00:00+00:00",
        "dag_id": "orders_daily",
        "logical_date": "2026-12-02T15:00:00+00:00",
        "start_date": "2026-12-02T15:00:00.5+00:00",
        "end_date": "2026-12-02T15:00:00.123456+00:00",
        "state": "success",
        "conf": {"batch": 7},
    }
    if version == "v1":
        row["execution_date"] = row["logical_date"]
    else:
        row.update(run_after="2026-12-02T15:00:00Z", run_type="manual")
    row.update(overrides)
    return row


def task_row(version: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "dag_id": "orders_daily",
        "dag_run_id": "manual__1",
        "task_id": "load",
        "map_index": -1,
        "state": "success",
        "end_date": "2026-12-02T15:00:01Z",
        "execution_date" if version == "v1" else "logical_date": "2026-12-02T15:00:00Z",
    }
    row.update(overrides)
    return row


class Fake:
    def __init__(self, version: str) -> None:
        self.version = version
        self.requests: list[httpx.Request] = []
        self.runs: list[dict[str, Any]] = [run_row(version)]
        self.tasks: list[dict[str, Any]] = [task_row(version)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        prefix = "/api/v1" if self.version == "v1" else "/api/v2"
        path = request.url.path
        if path == f"{prefix}/dags/~/dagRuns":
            return httpx.Response(200, json={"dag_runs": self.runs, "total_entries": 1})
        if path == f"{prefix}/dags/~/dagRuns/~/taskInstances":
            return httpx.Response(200, json={"task_instances": self.tasks, "total_entries": 1})
        if path.startswith(f"{prefix}/dags/orders_daily/dagRuns/"):
            if request.url.raw_path.endswith(b"/missing"):
                return httpx.Response(404, json={"detail": "not found"})
            running = run_row(self.version, end_date=None, state="running")
            return httpx.Response(200, json=running)  # a task may end before its run
        if path == "/auth/token":
            return httpx.Response(201, json={"access_token": "jwt"})
        return httpx.Response(404, json={"detail": f"no route {path}"})


async def _no_sleep(delay: float) -> None:
    return None


def client(fake: Fake) -> AirflowV1Client | AirflowV2Client:
    http = AirflowHttp(
        URL,
        auth="basic" if fake.version == "v1" else "password",
        credentials=Credentials(username="admin", password="pw"),
        transport=httpx.MockTransport(fake),
        sleep=_no_sleep,
        rng=random.Random(0),
    )
    return AirflowV1Client(http) if fake.version == "v1" else AirflowV2Client(http)


def _listing(fake: Fake) -> httpx.Request:
    return [r for r in fake.requests if r.url.path != "/auth/token"][-1]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_dag_runs_are_asked_for_finished_and_ordered_by_end(version: str) -> None:
    fake = Fake(version)
    async with client(fake) as c:
        assert isinstance(c, RunSource)
        page = await c.list_dag_runs(
            CompletionQuery(states=("failed", "success"), end_date_gte=T, limit=50, offset=100)
        )
    request = _listing(fake)
    params = request.url.params
    assert params.get_list("state") == ["failed", "success"]  # repeated, as both accept
    assert params["order_by"] == "end_date"
    assert params["end_date_gte"] == "2026-12-02T15:00:00.123456Z"
    assert (params["limit"], params["offset"]) == ("50", "100")
    [row] = page.rows
    assert (row.dag_id, row.run_id, row.state, row.conf) == (
        "orders_daily",
        "manual__2026-12-02T15:00:00+00:00",
        "success",
        {"batch": 7},
    )
    assert row.end_date == T
    assert row.logical_date == datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    assert row.task_id is None
    assert page.total_entries == 1


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_first_read_still_asks_for_finished_runs_only(version: str) -> None:
    fake = Fake(version)
    async with client(fake) as c:
        await c.list_dag_runs(CompletionQuery(states=("success",)))
    # A running run has no end_date; any lower bound leaves it out.
    assert _listing(fake).url.params["end_date_gte"].startswith("1970-01-01")


async def test_2x_task_instances_are_read_without_an_ordering_it_would_refuse() -> None:
    fake = Fake("v1")
    async with client(fake) as c:
        page = await c.list_task_instances(CompletionQuery(states=("success",)))
        with pytest.raises(BadRequest, match="cannot order task instances"):
            await c.list_task_instances(CompletionQuery(states=("success",), descending=True))
    assert "order_by" not in _listing(fake).url.params
    [row] = page.rows
    assert (row.task_id, row.map_index, row.conf) == ("load", -1, None)


async def test_3x_task_instances_are_ordered_newest_first_when_asked() -> None:
    fake = Fake("v2")
    async with client(fake) as c:
        await c.list_task_instances(CompletionQuery(states=("success",), descending=True))
    assert _listing(fake).url.params["order_by"] == "-end_date"


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_one_bad_row_is_reported_and_the_rest_is_read(version: str) -> None:
    fake = Fake(version)
    fake.runs = [run_row(version, end_date=None), run_row(version, conf="x"), run_row(version)]
    async with client(fake) as c:
        page = await c.list_dag_runs(CompletionQuery(states=("success",)))
    assert len(page.rows) == 1
    assert len(page.invalid) == 2
    assert "row 0" in page.invalid[0]
    assert "'end_date'" in page.invalid[0]
    assert "'conf' must be an object" in page.invalid[1]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_one_run_is_looked_up_by_encoded_ids_and_a_missing_one_is_none(version: str) -> None:
    fake = Fake(version)
    async with client(fake) as c:
        conf = await c.dag_run_conf("orders_daily", "manual__2026-12-02T15:00:00+00:00")
        assert await c.dag_run_conf("orders_daily", "missing") is None
    assert conf == {"batch": 7}
    raw = [r.url.raw_path for r in fake.requests if b"/dagRuns/manual" in r.url.raw_path]
    assert raw[0].endswith(b"/dagRuns/manual__2026-12-02T15%3A00%3A00%2B00%3A00")


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"dag_id": 1}, "'dag_id' must be a non-empty string"),
        ({"dag_run_id": ""}, "'dag_run_id' must be a non-empty string"),
        ({"end_date": "2026-12-02T15:00:00"}, "'end_date' has no time zone"),
        ({"end_date": "yesterday"}, "'end_date' is not an ISO-8601 time"),
        ({"conf": {"k": float("nan")}}, "'conf' contains a non-finite number"),
    ],
)
def test_invalid_rows_name_the_field_never_the_value(row: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_completion({**run_row("v2"), **row}, task=False)


def test_task_rows_need_an_integer_map_index() -> None:
    with pytest.raises(ValueError, match="'map_index' must be an integer"):
        parse_completion(task_row("v2", map_index="0"), task=True)
    assert parse_completion(task_row("v2", map_index=3), task=True).map_index == 3


def test_both_clients_are_run_sources() -> None:
    assert issubclass(AirflowV1Client, ClientBase)
    assert issubclass(AirflowV2Client, ClientBase)
