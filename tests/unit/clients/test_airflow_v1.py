"""AirflowV1Client (Airflow 2.x /api/v1) against a MockTransport fake of the real endpoints.

Payloads are shaped like the ones observed on a real 2.11.2 (see the API reference, 1.1-1.3).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from airflow_asset_sync.api.events import MAX_EXTRA_BYTES
from airflow_asset_sync.clients.airflow.base import (
    AssetNotFound,
    BadRequest,
    BadResponse,
    EventQuery,
)
from airflow_asset_sync.clients.airflow.http import AirflowHttp, Credentials, HttpOptions
from airflow_asset_sync.clients.airflow.v1 import AirflowV1Client

URL = "http://airflow2.test:8080"
URI = "s3://bucket/orders"
ENCODED_URI = "s3%3A%2F%2Fbucket%2Forders"


def event(event_id: int = 1, **overrides: Any) -> dict[str, Any]:
    """A dataset event exactly as 2.11.2 serialises it."""
    row: dict[str, Any] = {
        "created_dagruns": [],
        "dataset_id": 1,
        "dataset_uri": URI,
        "extra": {"copied_from": "a3", "from_rest_api": True},
        "id": event_id,
        "source_dag_id": None,
        "source_map_index": -1,
        "source_run_id": None,
        "source_task_id": None,
        "timestamp": "2026-11-22T07:19:57.452235+00:00",
    }
    row.update(overrides)
    return row


class Fake2x:
    """Routes like Airflow 2.x; records each request; answers can be overridden per path."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.datasets = {URI: 1}
        self.events: list[dict[str, Any]] = [event(1), event(2)]
        self.override: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path in self.override:
            return self.override[path](request)
        if path == "/api/v1/datasets/events" and request.method == "GET":
            return httpx.Response(
                200, json={"dataset_events": self.events, "total_entries": len(self.events)}
            )
        if path == "/api/v1/datasets/events" and request.method == "POST":
            body = json.loads(request.content)
            if body["dataset_uri"] not in self.datasets:
                return httpx.Response(
                    404,
                    json={"title": "Dataset not found", "status": 404, "type": "about:blank"},
                )
            return httpx.Response(
                200,
                json=event(
                    99,
                    dataset_uri=body["dataset_uri"],
                    extra={**body.get("extra", {}), "from_rest_api": True},
                ),
            )
        if path.startswith("/api/v1/datasets/"):
            uri = path.removeprefix("/api/v1/datasets/")  # httpx decodes the path for us
            if uri in self.datasets:
                return httpx.Response(200, json={"id": self.datasets[uri], "uri": uri})
            return httpx.Response(404, json={"title": "Dataset not found", "status": 404})
        return httpx.Response(404, json={"detail": "Not Found"})

    def of(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def client(fake: Fake2x, *, options: HttpOptions | None = None) -> AirflowV1Client:
    http = AirflowHttp(
        URL,
        auth="basic",
        credentials=Credentials(username="admin", password="adminpw"),
        options=options,
        transport=httpx.MockTransport(fake),
        sleep=_no_sleep,
        rng=random.Random(0),
    )
    return AirflowV1Client(http)


async def _no_sleep(delay: float) -> None:
    return None


def query_of(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


# -- listing -----------------------------------------------------------------------------------


async def test_listing_sends_exactly_the_params_2x_accepts() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        page = await api.list_events(EventQuery())
    (request,) = fake.requests
    assert request.method == "GET"
    assert request.url.path == "/api/v1/datasets/events"
    assert query_of(request) == {"limit": "100", "offset": "0", "order_by": "timestamp"}
    assert [e.id for e in page.events] == [1, 2]
    assert page.total_entries == 2
    assert page.invalid == []


async def test_listing_descending_with_offset() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        await api.list_events(EventQuery(limit=25, offset=50, ascending=False))
    assert query_of(fake.requests[0]) == {"limit": "25", "offset": "50", "order_by": "-timestamp"}


async def test_rows_map_dataset_names_to_the_neutral_event() -> None:
    fake = Fake2x()
    fake.events = [
        event(
            7,
            dataset_id=3,
            source_dag_id="producer",
            source_task_id="emit",
            source_run_id="manual__1",
            source_map_index=2,
        )
    ]
    async with client(fake) as api:
        (got,) = (await api.list_events(EventQuery())).events
    assert got.id == 7
    assert got.uri == URI
    assert got.asset_id == 3
    assert got.name is None
    assert got.group is None
    assert got.extra == {"copied_from": "a3", "from_rest_api": True}
    assert got.timestamp == datetime(2026, 11, 22, 7, 19, 57, 452235, tzinfo=UTC)
    assert (got.source_dag_id, got.source_task_id, got.source_run_id) == (
        "producer",
        "emit",
        "manual__1",
    )
    assert got.source_map_index == 2


async def test_time_filter_is_refused_without_a_request() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        with pytest.raises(BadRequest, match="cannot filter events by time"):
            await api.list_events(EventQuery(timestamp_gte=datetime(2026, 1, 1, tzinfo=UTC)))
    assert fake.requests == []


@pytest.mark.parametrize("query", [EventQuery(limit=0), EventQuery(offset=-1)])
async def test_nonsense_paging_is_refused_without_a_request(query: EventQuery) -> None:
    fake = Fake2x()
    async with client(fake) as api:
        with pytest.raises(BadRequest):
            await api.list_events(query)
    assert fake.requests == []


async def test_asset_filter_resolves_the_dataset_id_once_by_encoded_uri() -> None:
    fake = Fake2x()
    fake.datasets = {URI: 42}
    async with client(fake) as api:
        await api.list_events(EventQuery(asset_uri=URI))
        await api.list_events(EventQuery(asset_uri=URI, offset=100))
    lookups = [r for r in fake.requests if r.url.path != "/api/v1/datasets/events"]
    assert len(lookups) == 1
    assert lookups[0].url.raw_path == f"/api/v1/datasets/{ENCODED_URI}".encode()
    listings = fake.of("GET", "/api/v1/datasets/events")
    assert [query_of(r)["dataset_id"] for r in listings] == ["42", "42"]
    assert query_of(listings[1])["offset"] == "100"


async def test_asset_filter_for_an_unknown_uri_is_asset_not_found() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        with pytest.raises(AssetNotFound, match="s3://bucket/unknown"):
            await api.list_events(EventQuery(asset_uri="s3://bucket/unknown"))
    assert fake.of("GET", "/api/v1/datasets/events") == []


async def test_dataset_lookup_answering_another_uri_is_bad_response() -> None:
    fake = Fake2x()
    fake.override[f"/api/v1/datasets/{URI}"] = lambda r: httpx.Response(
        200, json={"id": 1, "uri": "s3://bucket/other"}
    )
    async with client(fake) as api:
        with pytest.raises(BadResponse, match="s3://bucket/other"):
            await api.dataset_id(URI)


async def test_asset_exists() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        assert await api.asset_exists(URI) is True
        assert await api.asset_exists("s3://bucket/missing") is False


# -- posting -----------------------------------------------------------------------------------


async def test_post_sends_dataset_uri_and_extra_and_reads_the_created_event() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        posted = await api.post_event(URI, {"airflow_asset_sync": {"event_id": 1}})
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.url.path == "/api/v1/datasets/events"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "dataset_uri": URI,
        "extra": {"airflow_asset_sync": {"event_id": 1}},
    }
    assert posted.id == 99
    assert posted.uri == URI
    assert posted.extra == {"airflow_asset_sync": {"event_id": 1}, "from_rest_api": True}


async def test_post_for_an_unknown_dataset_is_asset_not_found() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        with pytest.raises(AssetNotFound, match="s3://bucket/orders/"):
            await api.post_event("s3://bucket/orders/", {})  # 2.x compares the raw string


async def test_post_404_from_something_that_is_not_airflow_is_bad_request() -> None:
    fake = Fake2x()
    fake.override["/api/v1/datasets/events"] = lambda r: httpx.Response(
        404, html="<html>404 nginx</html>"
    )
    async with client(fake) as api:
        with pytest.raises(BadRequest, match="URL"):
            await api.post_event(URI, {})


async def test_post_on_airflow_before_2_9_says_so() -> None:
    fake = Fake2x()
    fake.override["/api/v1/datasets/events"] = lambda r: httpx.Response(
        405, json={"title": "Method Not Allowed"}
    )
    async with client(fake) as api:
        with pytest.raises(BadRequest, match=r"2\.9"):
            await api.post_event(URI, {})


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, html="<html>ok</html>"),
        httpx.Response(200, json=[1]),
        httpx.Response(200, json={"dataset_uri": URI}),
        httpx.Response(200, json={"id": "99", "dataset_uri": URI}),
        httpx.Response(200, json={"id": 99, "dataset_uri": URI, "extra": "x"}),
    ],
)
async def test_malformed_post_answer_is_bad_response(answer: httpx.Response) -> None:
    fake = Fake2x()
    fake.override["/api/v1/datasets/events"] = lambda r: answer
    async with client(fake) as api:
        with pytest.raises(BadResponse, match="/api/v1/datasets/events"):
            await api.post_event(URI, {})


async def test_post_with_empty_uri_is_refused_without_a_request() -> None:
    fake = Fake2x()
    async with client(fake) as api:
        with pytest.raises(BadRequest):
            await api.post_event("", {})
    assert fake.requests == []


# -- malformed listings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(200, html="<html><h1>Airflow 404 = lots of circles</h1></html>"), "JSON"),
        (httpx.Response(200, json=[event(1)]), "got array"),
        (httpx.Response(200, json={"asset_events": [event(1)]}), "'dataset_events'"),
        (httpx.Response(200, json={"dataset_events": {"0": event(1)}}), "got object"),
        (httpx.Response(200, content=b"null"), "got null"),
    ],
)
async def test_unusable_listing_body_is_bad_response_naming_path_and_status(
    answer: httpx.Response, expected: str
) -> None:
    fake = Fake2x()
    fake.override["/api/v1/datasets/events"] = lambda r: answer
    async with client(fake) as api:
        with pytest.raises(BadResponse) as info:
            await api.list_events(EventQuery())
    message = str(info.value)
    assert "GET http://airflow2.test:8080/api/v1/datasets/events (HTTP 200)" in message
    assert expected in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({k: v for k, v in event(5).items() if k != "dataset_uri"}, "event 5 row 0: field"),
        (event(5, id="5"), "field 'id' must be an integer, got string"),
        (event(5, id=True), "field 'id' must be an integer, got boolean"),
        (event(5, dataset_uri=None), "field 'dataset_uri' must be a string, got null"),
        (event(5, dataset_uri=["s3://x"]), "field 'dataset_uri' must be a string, got array"),
        (event(5, timestamp="2026-11-22T07:19:57"), "field 'timestamp' has no time zone"),
        (event(5, timestamp=1700000000), "field 'timestamp' must be an ISO-8601 string"),
        (event(5, extra=[1, 2]), "field 'extra' must be an object, got array"),
        (event(5, source_map_index="0"), "field 'source_map_index' must be an integer"),
        (
            event(5, extra={"blob": "x" * (MAX_EXTRA_BYTES + 1)}),
            f"above the {MAX_EXTRA_BYTES} byte limit",
        ),
        ("not a row", "row 0 is string, not an object"),
    ],
)
async def test_bad_rows_become_invalid_entries_naming_field_and_event(
    row: object, expected: str
) -> None:
    fake = Fake2x()
    fake.events = [row, event(6)]  # type: ignore[list-item]
    async with client(fake) as api:
        page = await api.list_events(EventQuery())
    assert [e.id for e in page.events] == [6]
    (problem,) = page.invalid
    assert isinstance(problem, BadResponse)
    assert expected in str(problem)
    assert "/api/v1/datasets/events" in str(problem)


async def test_missing_field_message_names_it() -> None:
    fake = Fake2x()
    fake.events = [{k: v for k, v in event(5).items() if k != "timestamp"}]
    async with client(fake) as api:
        page = await api.list_events(EventQuery())
    assert "event 5 row 0: field 'timestamp' is missing" in str(page.invalid[0])


async def test_null_extra_is_an_empty_extra_and_unknown_fields_are_ignored() -> None:
    fake = Fake2x()
    fake.events = [event(8, extra=None, some_future_field={"x": 1})]
    async with client(fake) as api:
        (got,) = (await api.list_events(EventQuery())).events
    assert got.extra == {}


async def test_nonsense_total_entries_is_none_not_a_crash() -> None:
    fake = Fake2x()
    fake.override["/api/v1/datasets/events"] = lambda r: httpx.Response(
        200, json={"dataset_events": [event(1)], "total_entries": "many"}
    )
    async with client(fake) as api:
        page = await api.list_events(EventQuery())
    assert page.total_entries is None
    assert [e.id for e in page.events] == [1]


def test_identity_properties() -> None:
    api = client(Fake2x())
    assert api.api_version == "v1"
    assert api.page_limit == 100
    assert client(Fake2x(), options=HttpOptions(page_limit=500)).page_limit == 500
    assert "adminpw" not in repr(api)


async def test_a_page_with_more_rows_than_asked_for_is_bad_response() -> None:
    """Offset paging advances by the rows a page held: a page with more rows than positions
    (a duplicated row) would skip rows never read. Found by the hostile-source properties."""
    fake = Fake2x()
    rows = [event(1), event(2), event(2), event(3)]
    fake.override["/api/v1/datasets/events"] = lambda r: httpx.Response(
        200, json={"dataset_events": rows[: int(r.url.params["limit"]) + 1], "total_entries": 3}
    )
    async with client(fake) as api:
        with pytest.raises(BadResponse, match="4 rows in a page of at most 3"):
            await api.list_events(EventQuery(limit=3))
        page = await api.list_events(EventQuery(limit=4))  # four asked, four sent: a page
    assert [e.id for e in page.events] == [1, 2, 2, 3]


# -- queued events (delivery mode oneRunPerEvent) ----------------------------------------------
# Shaped like 2.11.2's get_dataset_queued_events: 404 when nothing is queued.


QUEUED_V1 = f"/api/v1/datasets/queuedEvent/{URI}"  # httpx shows the path decoded


def _queued(*dag_ids: str, asset: dict[str, object]) -> dict[str, object]:
    rows = [{"dag_id": d, "created_at": "2026-12-02T06:00:00+00:00", **asset} for d in dag_ids]
    return {"queued_events": rows, "total_entries": len(rows)}


async def test_v1_counts_the_dags_that_have_the_dataset_queued() -> None:
    fake = Fake2x()
    fake.override[QUEUED_V1] = lambda r: httpx.Response(
        200, json=_queued("consume_a", "consume_b", asset={"uri": URI})
    )
    async with client(fake) as api:
        assert await api.queued_consumers(URI) == 2
    (request,) = fake.requests
    assert request.method == "GET"
    assert ENCODED_URI in str(request.url)  # the URI is sent percent-encoded whole


async def test_v1_404_means_nothing_queued_for_a_known_dataset() -> None:
    fake = Fake2x()
    fake.override[QUEUED_V1] = lambda r: httpx.Response(
        404, json={"title": "Queue event not found", "status": 404}
    )
    async with client(fake) as api:
        assert await api.queued_consumers(URI) == 0


async def test_v1_404_for_an_unknown_dataset_is_asset_not_found() -> None:
    fake = Fake2x()
    unknown = "s3://bucket/nobody"
    fake.override[f"/api/v1/datasets/queuedEvent/{unknown}"] = lambda r: httpx.Response(
        404, json={"title": "Queue event not found", "status": 404}
    )
    async with client(fake) as api:
        with pytest.raises(AssetNotFound, match="nobody"):
            await api.queued_consumers(unknown)
