"""Property tests: hostile JSON never crashes the parsers and never yields a half-trusted event.

"Trusted" means: every field of a returned `SourceEvent` is exactly (type and value) what the
server sent in the documented field, nothing was coerced (``"12"`` -> 12, ``true`` -> 1), the
timestamp is the sent instant in UTC, ``extra`` is strict JSON within the size bound, and the
event survives the Kafka envelope round trip. Anything else must be a `BadResponse`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_asset_sync.api.events import MAX_EXTRA_BYTES, Envelope, SourceEvent
from airflow_asset_sync.clients.airflow.base import BadResponse, EventPage
from airflow_asset_sync.clients.airflow.http import Reply
from airflow_asset_sync.clients.airflow.wire import (
    LIST_KEYS,
    Schema,
    parse_event,
    parse_event_page,
    parse_posted_event,
)

WHERE = "GET http://airflow.test/api/v2/assets/events (HTTP 200)"
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# wire name -> (SourceEvent attribute, exact Python type(s) accepted, required)
FIELDS: dict[Schema, dict[str, tuple[str, tuple[type, ...], bool]]] = {
    "v1": {
        "id": ("id", (int,), True),
        "dataset_uri": ("uri", (str,), True),
        "dataset_id": ("asset_id", (int, type(None)), False),
        "source_dag_id": ("source_dag_id", (str, type(None)), False),
        "source_task_id": ("source_task_id", (str, type(None)), False),
        "source_run_id": ("source_run_id", (str, type(None)), False),
        "source_map_index": ("source_map_index", (int, type(None)), False),
    },
    "v2": {
        "id": ("id", (int,), True),
        "uri": ("uri", (str,), True),
        "asset_id": ("asset_id", (int, type(None)), False),
        "name": ("name", (str, type(None)), False),
        "group": ("group", (str, type(None)), False),
        "source_dag_id": ("source_dag_id", (str, type(None)), False),
        "source_task_id": ("source_task_id", (str, type(None)), False),
        "source_run_id": ("source_run_id", (str, type(None)), False),
        "source_map_index": ("source_map_index", (int, type(None)), False),
    },
}

#: Text that sometimes carries lone surrogates: JSON can express them ("\\ud800"), UTF-8
#: cannot, and hypothesis leaves them out of st.text() by default.
#: (Built by joining characters: st.text merges alphabets and silently drops them.)
surrogates = st.integers(min_value=0xD800, max_value=0xDFFF).map(chr)
any_text = st.text(max_size=12) | st.lists(
    st.characters() | surrogates, min_size=1, max_size=12
).map("".join)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=16,
)
fixed_zones: st.SearchStrategy[tzinfo] = st.just(UTC) | st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
naive_datetimes = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))


def _with_zone(value: datetime, zone: tzinfo | None) -> str:
    return value.replace(tzinfo=zone).isoformat()


#: ISO strings with and without zones (including ones that overflow when moved to UTC),
#: plus arbitrary text.
timestamps = st.builds(_with_zone, naive_datetimes, st.none() | fixed_zones) | st.text(max_size=32)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.text(max_size=24) | any_text


def valid_value(wire: str) -> st.SearchStrategy[Any]:
    if wire == "id":
        return int64
    if wire in ("uri", "dataset_uri"):
        return st.text(min_size=1, max_size=40) | any_text
    if wire in ("asset_id", "dataset_id", "source_map_index"):
        return st.none() | int64
    return st.none() | texts


aware_timestamps = st.builds(_with_zone, naive_datetimes, fixed_zones)


@st.composite
def rows(draw: st.DrawFn, schema: Schema) -> dict[str, Any]:
    """A plausible row, then 0-3 mutations: a field dropped or replaced by arbitrary JSON.

    Starting valid matters: purely random rows are almost never valid, and the property
    would then only ever check the error path.
    """
    row: dict[str, Any] = {}
    for wire, (_, _, required) in FIELDS[schema].items():
        if required or draw(st.booleans()):
            row[wire] = draw(valid_value(wire))
    row["timestamp"] = draw(aware_timestamps)
    if draw(st.booleans()):
        row["extra"] = draw(st.none() | st.dictionaries(texts, json_values, max_size=4))
    if draw(st.booleans()):
        row["created_dagruns"] = draw(json_values)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        key = draw(st.sampled_from([*FIELDS[schema], "timestamp", "extra"]))
        if draw(st.booleans()):
            row.pop(key, None)
        else:
            row[key] = draw(json_values | timestamps)
    return row


schemas = st.sampled_from(["v1", "v2"])
T = TypeVar("T")


def outcome(parse: Callable[[], T]) -> T | BadResponse:
    """The parser's result or its BadResponse; any other exception fails the test."""
    try:
        return parse()
    except BadResponse as exc:
        return exc


def assert_trusted(event: SourceEvent, row: object, schema: Schema) -> None:
    assert isinstance(row, dict)
    for wire, (attr, types, required) in FIELDS[schema].items():
        sent = row.get(wire)
        if required:
            assert wire in row
        assert type(sent) in types, (wire, sent)  # exact type: bool is not int
        assert getattr(event, attr) == sent
    sent_ts = row["timestamp"]
    assert isinstance(sent_ts, str)
    assert event.timestamp == datetime.fromisoformat(sent_ts)
    assert event.timestamp.utcoffset() == timedelta(0)
    sent_extra = row.get("extra")
    assert isinstance(sent_extra, dict | type(None))
    assert event.extra == (sent_extra or {})
    encoded = json.dumps(event.extra, allow_nan=False, separators=(",", ":"))
    assert len(encoded) <= MAX_EXTRA_BYTES
    assert event.uri
    envelope = Envelope(sync="ns/sync", origin="src", event=event)
    assert Envelope.from_bytes(envelope.to_bytes()).event == event


@SETTINGS
@given(schema=schemas, row=st.one_of(json_values, rows("v1"), rows("v2")))
def test_rows_yield_a_fully_trusted_event_or_bad_response(schema: Schema, row: object) -> None:
    event = outcome(lambda: parse_event(row, schema=schema, where=WHERE))
    if isinstance(event, BadResponse):
        assert WHERE in str(event)
        return
    assert_trusted(event, row, schema)


@SETTINGS
@given(data=st.data(), schema=schemas)
def test_pages_split_rows_into_events_and_invalid_without_raising(
    data: st.DataObject, schema: Schema
) -> None:
    key = LIST_KEYS[schema]
    listed = st.lists(rows(schema) | json_values, max_size=6)
    page_body = st.fixed_dictionaries({key: listed}, optional={"total_entries": json_values})
    body = data.draw(page_body | json_values)
    page = outcome(lambda: parse_event_page(body, schema=schema, where=WHERE))
    if isinstance(page, BadResponse):
        assert not (isinstance(body, dict) and isinstance(body.get(key), list))
        assert WHERE in str(page)
        return
    assert isinstance(page, EventPage)
    assert isinstance(body, dict)
    sent = body[key]
    assert isinstance(sent, list)
    assert len(page.events) + len(page.invalid) == len(sent)
    assert all(isinstance(problem, BadResponse) for problem in page.invalid)
    trusted = iter(page.events)
    for row in sent:  # events keep the server's order, skipping only the invalid rows
        parsed = outcome(lambda: parse_event(row, schema=schema, where=WHERE))  # noqa: B023
        if not isinstance(parsed, BadResponse):
            assert_trusted(next(trusted), row, schema)
    total = body.get("total_entries")
    if page.total_entries is not None:
        assert page.total_entries == total
        assert type(total) is int


def _valid_body(schema: Schema) -> bytes:
    uri_key = "dataset_uri" if schema == "v1" else "uri"
    row = {"id": 1, uri_key: "s3://b/k", "timestamp": "2026-11-22T07:17:43.013686Z", "extra": {}}
    return json.dumps({LIST_KEYS[schema]: [row, row], "total_entries": 2}).encode()


@SETTINGS
@given(data=st.data(), schema=schemas)
@example(data=None, schema="v2")
def test_truncated_or_garbled_bytes_are_bad_response_only(
    data: st.DataObject | None, schema: Schema
) -> None:
    full = _valid_body(schema)
    if data is None:
        body = b'{"asset_events": [{"id": 1, "uri": "x", "timestamp": Infinity}]}'
    else:
        cut = data.draw(st.integers(min_value=0, max_value=len(full)))
        noise = data.draw(
            st.sampled_from([b"", b"NaN", b"\xff\xfe", b'"\\ud800"', b"]]]", b"-Infinity"])
        )
        body = data.draw(st.sampled_from([full[:cut] + noise, full[cut:], noise + full[:cut]]))
    reply = Reply(method="GET", target="GET http://airflow.test/api/x", status=200, body=body)
    page = outcome(lambda: parse_event_page(reply.json(), schema=schema, where=reply.where))
    if isinstance(page, BadResponse):
        assert "/api/x (HTTP 200)" in str(page)
        return
    for event in page.events:
        assert event.id == 1
        assert event.uri == "s3://b/k"


@SETTINGS
@given(
    size=st.integers(min_value=MAX_EXTRA_BYTES - 64, max_value=MAX_EXTRA_BYTES + 64),
    schema=schemas,
)
def test_extra_is_accepted_exactly_up_to_the_size_bound(size: int, schema: Schema) -> None:
    overhead = len('{"k":""}')
    extra = {"k": "x" * (size - overhead)}
    uri_key = "dataset_uri" if schema == "v1" else "uri"
    row = {"id": 3, uri_key: "s3://b/k", "timestamp": "2026-01-01T00:00:00Z", "extra": extra}
    if size > MAX_EXTRA_BYTES:
        with pytest.raises(BadResponse, match=r"event 3.*byte limit"):
            parse_event(row, schema=schema, where=WHERE)
    else:
        assert parse_event(row, schema=schema, where=WHERE).extra == extra


@SETTINGS
@given(schema=schemas, body=st.one_of(json_values, rows("v1"), rows("v2")))
@example(schema="v1", body={"id": True, "dataset_uri": "s3://b/k"})
@example(schema="v2", body={"id": 1, "uri": "\ud800"})
def test_posted_event_parsing_never_crashes(schema: Schema, body: object) -> None:
    posted = outcome(
        lambda: parse_posted_event(body, schema=schema, where=WHERE, requested_uri="s3://b/k")
    )
    if isinstance(posted, BadResponse):
        assert "created" in str(posted)
        return
    assert isinstance(body, dict)
    assert type(body["id"]) is int
    assert posted.id == body["id"]
    assert isinstance(posted.uri, str)
    assert isinstance(posted.extra, dict)
    json.dumps(posted.extra, allow_nan=False)
