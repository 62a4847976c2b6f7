"""AirflowV2Client (Airflow 3.x /api/v2) against a MockTransport fake of the real endpoints.

Payloads are shaped like the ones observed on a real 3.3.2 (see the API reference, 2.1-2.5).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from airflow_asset_sync.clients.airflow.base import (
    AssetNotFound,
    BadRequest,
    BadResponse,
    EventQuery,
)
from airflow_asset_sync.clients.airflow.http import AirflowHttp, Credentials, HttpOptions
from airflow_asset_sync.clients.airflow.v2 import AirflowV2Client
from airflow_asset_sync.clients.airflow.wire import parse_event, supports_partition_key

URL = "http://airflow3.test:8080"
URI = "s3://bucket/orders"


def event(event_id: int = 1, **overrides: Any) -> dict[str, Any]:
    """An asset event exactly as 3.3.2 serialises it."""
    row: dict[str, Any] = {
        "id": event_id,
        "asset_id": 1,
        "uri": URI,
        "name": "orders",
        "group": "asset",
        "extra": {"copied_from": "a2", "from_rest_api": True},
        "source_task_id": None,
        "source_dag_id": None,
        "source_run_id": None,
        "source_map_index": -1,
        "created_dagruns": [],
        "timestamp": "2026-11-22T07:17:43.013686Z",
        "partition_key": None,
    }
    row.update(overrides)
    return row


def asset(asset_id: int, uri: str) -> dict[str, Any]:
    return {"id": asset_id, "name": uri.rsplit("/", 1)[-1], "uri": uri, "group": "asset"}


class Fake3x:
    """Routes like Airflow 3.x (token auth); records requests; assets are active ones."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.assets: list[dict[str, Any]] = [
            asset(7, "s3://bucket/orders-archive"),
            asset(3, URI),
            asset(8, "S3://BUCKET/ORDERS"),
        ]
        self.events: list[Any] = [event(1), event(2)]
        self.override: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != "Bearer tkn-0123456789":
            return httpx.Response(401, json={"detail": "Not authenticated"})
        path = request.url.path
        if path in self.override:
            return self.override[path](request)
        if path == "/api/v2/assets" and request.method == "GET":
            params = request.url.params
            pattern = params["uri_pattern"].lower()
            matches = [a for a in self.assets if pattern in a["uri"].lower()]
            offset, limit = int(params["offset"]), int(params["limit"])
            return httpx.Response(
                200,
                json={"assets": matches[offset : offset + limit], "total_entries": len(matches)},
            )
        if path == "/api/v2/assets/events" and request.method == "GET":
            return httpx.Response(
                200, json={"asset_events": self.events, "total_entries": len(self.events)}
            )
        if path == "/api/v2/assets/events" and request.method == "POST":
            body = json.loads(request.content)
            known = {a["id"]: a for a in self.assets}
            if body["asset_id"] not in known:
                return httpx.Response(
                    404, json={"detail": f"Asset with ID: `{body['asset_id']}` was not found"}
                )
            found = known[body["asset_id"]]
            return httpx.Response(
                200,
                json=event(
                    500,
                    asset_id=found["id"],
                    uri=found["uri"],
                    extra={**body["extra"], "from_rest_api": True},
                ),
            )
        return httpx.Response(404, json={"detail": "Not Found"})

    def of(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


async def _no_sleep(delay: float) -> None:
    return None


def client(fake: Fake3x, *, options: HttpOptions | None = None) -> AirflowV2Client:
    http = AirflowHttp(
        URL,
        auth="token",
        credentials=Credentials(token="tkn-0123456789"),
        options=options,
        transport=httpx.MockTransport(fake),
        sleep=_no_sleep,
        rng=random.Random(0),
    )
    return AirflowV2Client(http)


def query_of(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


# -- listing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Wed, 25 Nov 2026 02:10:07 GMT", datetime(2026, 11, 25, 2, 10, 7, tzinfo=UTC)),
        (None, None),
        ("yesterday", None),
        ("Wed, 25 Nov 2026 02:10:07", None),  # no zone: not an HTTP date
        ("x" * 500, None),
    ],
)
async def test_listing_reports_the_server_clock_from_its_date_header(
    header: str | None, expected: datetime | None
) -> None:
    fake = Fake3x()

    def listing(request: httpx.Request) -> httpx.Response:
        headers = {"date": header} if header is not None else {}
        return httpx.Response(
            200, json={"asset_events": [event(1)], "total_entries": 1}, headers=headers
        )

    fake.override["/api/v2/assets/events"] = listing
    async with client(fake) as api:
        page = await api.list_events(EventQuery(limit=50, offset=0, ascending=True))
    assert page.server_time == expected
    assert [e.id for e in page.events] == [1]


async def test_listing_sends_limit_offset_and_order() -> None:
    fake = Fake3x()
    async with client(fake) as api:
        page = await api.list_events(EventQuery(limit=50, offset=10, ascending=False))
    (request,) = fake.requests
    assert request.url.path == "/api/v2/assets/events"
    assert query_of(request) == {"limit": "50", "offset": "10", "order_by": "-timestamp"}
    assert [e.id for e in page.events] == [1, 2]
    assert page.total_entries == 2


async def test_timestamp_filter_is_utc_with_z_and_url_encoded() -> None:
    fake = Fake3x()
    cet = timezone(timedelta(hours=1))
    since = datetime(2026, 11, 22, 8, 17, 43, 13686, tzinfo=cet)
    async with client(fake) as api:
        await api.list_events(EventQuery(timestamp_gte=since))
    (request,) = fake.requests
    assert query_of(request)["timestamp_gte"] == "2026-11-22T07:17:43.013686Z"
    raw_query = request.url.query.decode()
    assert "timestamp_gte=2026-11-22T07%3A17%3A43.013686Z" in raw_query
    assert "+" not in raw_query  # an unencoded '+' would arrive as a space (HTTP 422)
    assert "order_by=timestamp" in raw_query


async def test_naive_timestamp_is_refused_without_a_request() -> None:
    fake = Fake3x()
    async with client(fake) as api:
        with pytest.raises(BadRequest, match="time zone"):
            await api.list_events(EventQuery(timestamp_gte=datetime(2026, 1, 1)))
    assert fake.requests == []


async def test_rows_map_asset_fields_including_name_and_group() -> None:
    fake = Fake3x()
    fake.events = [
        event(
            9,
            asset_id=3,
            name="orders",
            group="finance",
            source_dag_id="producer",
            source_task_id="emit",
            source_run_id="scheduled__1",
            source_map_index=0,
            created_dagruns=[{"run_id": "r", "dag_id": "d", "triggering": True}],
        )
    ]
    async with client(fake) as api:
        (got,) = (await api.list_events(EventQuery())).events
    assert (got.id, got.asset_id, got.uri, got.name, got.group) == (
        9,
        3,
        URI,
        "orders",
        "finance",
    )
    assert got.timestamp == datetime(2026, 11, 22, 7, 17, 43, 13686, tzinfo=UTC)
    assert got.extra == {"copied_from": "a2", "from_rest_api": True}
    assert (got.source_dag_id, got.source_task_id, got.source_run_id, got.source_map_index) == (
        "producer",
        "emit",
        "scheduled__1",
        0,
    )


async def test_asset_filter_sends_the_resolved_asset_id() -> None:
    fake = Fake3x()
    async with client(fake) as api:
        await api.list_events(EventQuery(asset_uri=URI))
    listing = fake.of("GET", "/api/v2/assets/events")[0]
    assert query_of(listing)["asset_id"] == "3"


# -- uri -> asset id ---------------------------------------------------------------------------


async def test_resolution_keeps_only_the_exact_uri_among_pattern_matches() -> None:
    fake = Fake3x()
    async with client(fake) as api:
        assert await api.asset_id(URI) == 3
    (lookup,) = fake.of("GET", "/api/v2/assets")
    assert query_of(lookup) == {
        "uri_pattern": URI,
        "only_active": "true",
        "order_by": "id",
        "limit": "100",
        "offset": "0",
    }


async def test_resolution_pages_through_substring_matches() -> None:
    fake = Fake3x()
    fake.assets = [asset(i, f"{URI}-{i}") for i in range(10, 15)] + [asset(3, URI)]
    async with client(fake, options=HttpOptions(page_limit=2)) as api:
        assert await api.asset_id(URI) == 3
    offsets = [query_of(r)["offset"] for r in fake.of("GET", "/api/v2/assets")]
    assert offsets == ["0", "2", "4"]


async def test_resolution_miss_is_asset_not_found_and_not_cached() -> None:
    fake = Fake3x()
    fake.assets = [asset(7, f"{URI}-archive")]
    async with client(fake) as api:
        with pytest.raises(AssetNotFound, match="no active asset"):
            await api.post_event(URI, {})
        fake.assets.append(asset(3, URI))  # the consuming DAG gets deployed
        posted = await api.post_event(URI, {})
    assert posted.uri == URI
    assert len(fake.of("GET", "/api/v2/assets")) == 2
    assert len(fake.of("POST", "/api/v2/assets/events")) == 1


async def test_resolution_with_malformed_assets_answer_is_bad_response() -> None:
    fake = Fake3x()
    fake.override["/api/v2/assets"] = lambda r: httpx.Response(200, json={"assets": "nope"})
    async with client(fake) as api:
        with pytest.raises(BadResponse, match="'assets'"):
            await api.asset_id(URI)


async def test_resolution_with_non_integer_id_is_bad_response() -> None:
    fake = Fake3x()
    fake.assets = [{"id": "3", "uri": URI}]
    async with client(fake) as api:
        with pytest.raises(BadResponse, match="integer 'id'"):
            await api.asset_id(URI)


async def test_asset_exists() -> None:
    fake = Fake3x()
    async with client(fake) as api:
        assert await api.asset_exists(URI) is True
        assert await api.asset_exists("s3://bucket/orders-") is False


# -- posting -----------------------------------------------------------------------------------


async def test_post_sends_asset_id_and_extra_and_caches_the_id() -> None:
    fake = Fake3x()
    async with client(fake) as api:
        first = await api.post_event(URI, {"k": 1})
        await api.post_event(URI, {"k": 2})
    posts = fake.of("POST", "/api/v2/assets/events")
    assert [json.loads(p.content) for p in posts] == [
        {"asset_id": 3, "extra": {"k": 1}},
        {"asset_id": 3, "extra": {"k": 2}},
    ]
    assert posts[0].headers["content-type"] == "application/json"
    assert len(fake.of("GET", "/api/v2/assets")) == 1
    assert (first.id, first.uri, first.extra) == (500, URI, {"k": 1, "from_rest_api": True})


async def test_stale_cached_id_is_refreshed_on_404_and_the_post_repeated_once() -> None:
    fake = Fake3x()
    async with client(fake) as api:
        await api.post_event(URI, {})
        # The asset was deactivated and a new one with the same URI became active.
        fake.assets = [asset(9, URI)]
        posted = await api.post_event(URI, {"n": 2})
    bodies = [json.loads(p.content) for p in fake.of("POST", "/api/v2/assets/events")]
    assert [b["asset_id"] for b in bodies] == [3, 3, 9]
    assert bodies[-1]["extra"] == {"n": 2}
    assert len(fake.of("GET", "/api/v2/assets")) == 2
    assert posted.extra == {"n": 2, "from_rest_api": True}


async def test_404_with_an_unchanged_id_is_asset_not_found() -> None:
    fake = Fake3x()
    fake.override["/api/v2/assets/events"] = lambda r: httpx.Response(
        404, json={"detail": "Asset with ID: `3` was not found"}
    )
    async with client(fake) as api:
        with pytest.raises(AssetNotFound):
            await api.post_event(URI, {})  # fresh id: no second resolution
        with pytest.raises(AssetNotFound):
            await api.post_event(URI, {})
    assert len(fake.of("POST", "/api/v2/assets/events")) == 2


async def test_post_404_without_json_is_bad_request() -> None:
    fake = Fake3x()
    fake.override["/api/v2/assets/events"] = lambda r: httpx.Response(404, html="<html/>")
    async with client(fake) as api:
        with pytest.raises(BadRequest, match="URL"):
            await api.post_event(URI, {})


async def test_post_answer_without_uri_falls_back_to_the_requested_one() -> None:
    fake = Fake3x()
    fake.override["/api/v2/assets/events"] = lambda r: httpx.Response(
        200, json={"id": 12, "uri": None, "extra": None}
    )
    async with client(fake) as api:
        posted = await api.post_event(URI, {})
    assert (posted.id, posted.uri, posted.extra) == (12, URI, {})


# -- malformed listings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (event(4, uri=None), "event 4 row 0: field 'uri' must be a string, got null"),
        (event(4, uri=""), "field 'uri' is empty"),
        (event(4, name=5), "field 'name' must be a string, got number"),
        (event(4, asset_id=1.5), "field 'asset_id' must be an integer"),
        (event(4, id=2**70), "row 0: field 'id' must be an integer"),
        (event(4, timestamp="yesterday"), "field 'timestamp' is not an ISO-8601 time"),
        (event(4, timestamp="0001-01-01T00:00:00+01:00"), "field 'timestamp' is out of range"),
        (event(4, extra={"deep": json.loads("[" * 80 + "]" * 80)}), "nested deeper than"),
        (event(4, group={"a": 1}), "field 'group' must be a string, got object"),
    ],
)
async def test_bad_rows_become_invalid_entries(row: dict[str, Any], expected: str) -> None:
    fake = Fake3x()
    fake.events = [row, event(5)]
    async with client(fake) as api:
        page = await api.list_events(EventQuery())
    assert [e.id for e in page.events] == [5]
    assert len(page.invalid) == 1
    assert expected in str(page.invalid[0])


async def test_non_finite_numbers_and_lone_surrogates_only_sink_their_row() -> None:
    body = (
        '{"asset_events": ['
        '{"id": 1, "uri": "s3://a", "timestamp": "2026-01-01T00:00:00Z", "extra": {"x": NaN}},'
        '{"id": 2, "uri": "s3://a", "timestamp": "2026-01-01T00:00:00Z",'
        ' "extra": {"x": "\\ud800"}},'
        '{"id": 3, "uri": "s3://a", "timestamp": "2026-01-01T00:00:00Z", "extra": {"x": 1.5}}'
        '], "total_entries": 3}'
    )
    fake = Fake3x()
    fake.override["/api/v2/assets/events"] = lambda r: httpx.Response(200, content=body.encode())
    async with client(fake) as api:
        page = await api.list_events(EventQuery())
    assert [e.id for e in page.events] == [3]
    messages = [str(p) for p in page.invalid]
    assert "NaN" in messages[0]
    assert "event 1" in messages[0]
    assert "Unicode" in messages[1]
    assert "event 2" in messages[1]


async def test_html_error_page_with_200_is_bad_response() -> None:
    fake = Fake3x()
    fake.override["/api/v2/assets/events"] = lambda r: httpx.Response(
        200, html="<!doctype html><title>Airflow</title>"
    )
    async with client(fake) as api:
        with pytest.raises(BadResponse, match=r"/api/v2/assets/events \(HTTP 200\).*text/html"):
            await api.list_events(EventQuery())


async def test_html_5xx_page_after_retries_is_unavailable_naming_the_path() -> None:
    from airflow_asset_sync.clients.airflow.base import Unavailable

    fake = Fake3x()
    fake.override["/api/v2/assets/events"] = lambda r: httpx.Response(502, html="<h1>502</h1>")
    async with client(fake) as api:
        with pytest.raises(Unavailable, match="/api/v2/assets/events: HTTP 502"):
            await api.list_events(EventQuery())


def test_identity_properties() -> None:
    api = client(Fake3x())
    assert api.api_version == "v2"
    assert api.page_limit == 100
    assert "tkn-0123456789" not in repr(api)


async def test_a_page_with_more_rows_than_asked_for_is_bad_response() -> None:
    """Offset paging advances by the rows a page held: a page with more rows than positions
    (a duplicated row) would skip rows never read. Found by the hostile-source properties."""
    fake = Fake3x()
    rows = [event(1), event(2), event(2), event(3)]
    fake.override["/api/v2/assets/events"] = lambda r: httpx.Response(
        200, json={"asset_events": rows[: int(r.url.params["limit"]) + 1], "total_entries": 3}
    )
    async with client(fake) as api:
        with pytest.raises(BadResponse, match="4 rows in a page of at most 3"):
            await api.list_events(EventQuery(limit=3))
        page = await api.list_events(EventQuery(limit=4))  # four asked, four sent: a page
    assert [e.id for e in page.events] == [1, 2, 2, 3]


# -- partition_key (AIP-76, 3.2+) ---------------------------------------------------------------
# The listing carries it into `SourceEvent`; the create body carries it only to servers that
# take it (3.2+, by their reported version): 3.0 and 3.1 forbid unknown fields (422).


class Versioned(Fake3x):
    """Fake3x that answers ``/api/v2/version`` without auth, as 3.x does."""

    def __init__(self, version: str | None) -> None:
        super().__init__()
        self.version = version

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/version":
            self.requests.append(request)
            if self.version is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json={"version": self.version, "git_version": None})
        if request.url.path == "/api/v2/assets/events" and request.method == "POST":
            body = json.loads(request.content)
            if "partition_key" in body and self.version and self.version.startswith("3.1"):
                return httpx.Response(422, json={"detail": [{"type": "extra_forbidden"}]})
            reply = super().__call__(request)
            created = json.loads(reply.content)
            created["partition_key"] = body.get("partition_key")
            return httpx.Response(reply.status_code, json=created)
        return super().__call__(request)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.3.2", True),
        ("3.2.0", True),
        ("3.2.0rc1", True),
        ("4.0.0", True),
        ("3.1.7", False),
        ("3.0.6", False),
        ("2.11.2", False),
        (None, False),
        ("", False),
        ("three", False),
        ("3", False),
    ],
)
def test_supports_partition_key_by_version(version: str | None, expected: bool) -> None:
    assert supports_partition_key(version) is expected


def test_listing_row_carries_partition_key() -> None:
    parsed = parse_event(event(4, partition_key="2026-12-01"), schema="v2", where="GET x")
    assert parsed.partition_key == "2026-12-01"
    assert parse_event(event(5), schema="v2", where="GET x").partition_key is None
    # 3.0/3.1 rows have no such field at all.
    row = event(6)
    del row["partition_key"]
    assert parse_event(row, schema="v2", where="GET x").partition_key is None


def test_listing_row_with_a_non_string_partition_key_names_the_field() -> None:
    with pytest.raises(Exception, match="field 'partition_key' must be a string, got number"):
        parse_event(event(4, partition_key=7), schema="v2", where="GET x")


async def test_list_events_returns_the_partition_key() -> None:
    fake = Versioned("3.3.2")
    fake.events = [event(1, partition_key="eu|2026-12-01"), event(2)]
    async with client(fake) as api:
        page = await api.list_events(EventQuery())
    assert [e.partition_key for e in page.events] == ["eu|2026-12-01", None]


async def test_post_sends_partition_key_to_3_2_and_later_and_asks_the_version_once() -> None:
    fake = Versioned("3.3.2")
    async with client(fake) as api:
        first = await api.post_event(URI, {"k": 1}, partition_key="2026-12-01")
        await api.post_event(URI, {"k": 2}, partition_key="2026-12-02")
        await api.post_event(URI, {"k": 3})
    bodies = [json.loads(p.content) for p in fake.of("POST", "/api/v2/assets/events")]
    assert bodies == [
        {"asset_id": 3, "extra": {"k": 1}, "partition_key": "2026-12-01"},
        {"asset_id": 3, "extra": {"k": 2}, "partition_key": "2026-12-02"},
        {"asset_id": 3, "extra": {"k": 3}},  # no key: the body is what it always was
    ]
    assert first.partition_key == "2026-12-01"
    (probe,) = fake.of("GET", "/api/v2/version")
    assert "authorization" not in probe.headers  # the version endpoint is public


@pytest.mark.parametrize("version", ["3.1.7", None])
async def test_post_leaves_partition_key_out_for_servers_that_cannot_take_it(
    version: str | None,
) -> None:
    fake = Versioned(version)
    async with client(fake) as api:
        posted = await api.post_event(URI, {"k": 1}, partition_key="2026-12-01")
    (body,) = [json.loads(p.content) for p in fake.of("POST", "/api/v2/assets/events")]
    assert body == {"asset_id": 3, "extra": {"k": 1}}
    assert posted.partition_key is None


async def test_detected_server_version_is_used_without_asking() -> None:
    fake = Versioned("3.1.0")  # would refuse; the detected version says 3.3.2
    fake.version = "3.3.2"
    api = AirflowV2Client(client(fake).http, server_version="3.3.2")
    async with api:
        await api.post_event(URI, {}, partition_key="p1")
    assert fake.of("GET", "/api/v2/version") == []
    (body,) = [json.loads(p.content) for p in fake.of("POST", "/api/v2/assets/events")]
    assert body["partition_key"] == "p1"


# -- queued events (delivery mode oneRunPerEvent) ----------------------------------------------
# Shaped like 3.3.2's get_asset_queued_events: an empty list when nothing is queued.


QUEUED_V2 = "/api/v2/assets/3/queuedEvents"


def _queued(*dag_ids: str, asset: dict[str, object]) -> dict[str, object]:
    rows = [{"dag_id": d, "created_at": "2026-12-02T06:00:00+00:00", **asset} for d in dag_ids]
    return {"queued_events": rows, "total_entries": len(rows)}


async def test_v2_counts_rows_and_an_empty_list_is_zero() -> None:
    fake = Fake3x()
    answers = [_queued("consume_a", asset={"asset_id": 3}), _queued(asset={"asset_id": 3})]
    fake.override[QUEUED_V2] = lambda r: httpx.Response(200, json=answers.pop(0))
    async with client(fake) as api:
        assert await api.queued_consumers(URI) == 1
        assert await api.queued_consumers(URI) == 0
    assert len([r for r in fake.requests if r.url.path == "/api/v2/assets"]) == 1  # id cached


async def test_v2_unknown_asset_is_asset_not_found() -> None:
    async with client(Fake3x()) as api:
        with pytest.raises(AssetNotFound):
            await api.queued_consumers("s3://bucket/nobody")


@pytest.mark.parametrize(
    "body",
    [{"queued_events": None}, {"queued_events": [{"created_at": "x"}]}, ["not", "an object"]],
    ids=["no-array", "row-without-dag-id", "not-an-object"],
)
async def test_a_garbled_answer_is_bad_response_never_read_as_consumed(body: object) -> None:
    fake = Fake3x()
    fake.override[QUEUED_V2] = lambda r: httpx.Response(200, json=body)
    async with client(fake) as api:
        with pytest.raises(BadResponse, match="queued"):
            await api.queued_consumers(URI)
