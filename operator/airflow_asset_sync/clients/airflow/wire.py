"""The wire format of both Airflow APIs: JSON in, trusted values out; query parameters out.

Why a separate module without httpx: parsing is where hostile or broken payloads are turned
into `SourceEvent`s, so it must be easy to test exhaustively (the property tests feed it
type-confused, truncated and oversized JSON) without any HTTP in the way.

Trust rules:

- Every field is checked for its exact JSON type: pydantic's lax mode would turn ``"12"``
  or ``true`` into an id, and an event built from a coerced id is one we would dedupe and
  mark wrongly. No coercion anywhere (`model_validate(..., strict=True)` as a second gate).
- One bad row never sinks a page: it becomes an `InvalidRow` in `EventPage.invalid`, named
  by row index, event id (when known) and the field as the server spells it. A poller can
  then count it and move on instead of stalling on one event forever.
- A body that is not JSON, or not the documented top-level shape, raises `BadResponse`
  naming the request and status; there is nothing per-row to salvage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeGuard

from pydantic import ValidationError

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.clients.airflow.base import (
    BadRequest,
    BadResponse,
    EventPage,
    EventQuery,
    InvalidRow,
    PostedEvent,
)

Schema = Literal["v1", "v2"]

#: Longest string accepted in any event field. Airflow caps URIs at 3000 characters (2.9+
#: `_sanitize_uri`) and names at 1500 (3.x); anything far beyond is not an Airflow value.
MAX_STRING_CHARS = 8192

#: Deepest nesting accepted inside `extra`. Downstream serialisers (json, pydantic-core)
#: recurse per level; a bound here keeps a hostile extra from blowing their stacks later.
MAX_EXTRA_DEPTH = 64

#: Ids are database integers; anything outside signed 64 bits did not come from one.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

#: Where the event list sits in a listing body.
LIST_KEYS: dict[Schema, str] = {"v1": "dataset_events", "v2": "asset_events"}

# Field kinds: how a wire value is checked before it may reach a SourceEvent.
_Kind = Literal["int", "opt_int", "str", "opt_str", "timestamp", "extra"]

#: wire name -> (SourceEvent field, kind). Unknown wire fields (created_dagruns, future
#: additions) are ignored on purpose: forward compatibility. ``partition_key`` (3.2+) is
#: optional: 3.0/3.1 rows have none, 3.2+ rows carry it (null when unpartitioned).
_FIELDS: dict[Schema, dict[str, tuple[str, _Kind]]] = {
    "v1": {
        "id": ("id", "int"),
        "dataset_id": ("asset_id", "opt_int"),
        "dataset_uri": ("uri", "str"),
        "extra": ("extra", "extra"),
        "timestamp": ("timestamp", "timestamp"),
        "source_dag_id": ("source_dag_id", "opt_str"),
        "source_task_id": ("source_task_id", "opt_str"),
        "source_run_id": ("source_run_id", "opt_str"),
        "source_map_index": ("source_map_index", "opt_int"),
    },
    "v2": {
        "id": ("id", "int"),
        "asset_id": ("asset_id", "opt_int"),
        "uri": ("uri", "str"),
        "name": ("name", "opt_str"),
        "group": ("group", "opt_str"),
        "extra": ("extra", "extra"),
        "timestamp": ("timestamp", "timestamp"),
        "source_dag_id": ("source_dag_id", "opt_str"),
        "source_task_id": ("source_task_id", "opt_str"),
        "source_run_id": ("source_run_id", "opt_str"),
        "source_map_index": ("source_map_index", "opt_int"),
        "partition_key": ("partition_key", "opt_str"),
    },
}


class NonFinite:
    """Stands in for ``NaN``/``Infinity`` found in a body.

    Python's json accepts them, JSON does not. Rejecting the whole body would let one bad
    event block a page forever; this marker lets only the row that carries one fail.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"NonFinite({self.text})"


def loads_json(data: bytes) -> object:
    """Decode a body; raises ValueError (incl. UnicodeDecodeError) or RecursionError."""
    return json.loads(data, parse_constant=NonFinite)


def type_name(value: object) -> str:
    """A JSON-ish name of a value's type, for messages that never echo the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | NonFinite):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _utf8(text: str) -> bool:
    """JSON allows lone surrogates (``"\\ud800"``) that UTF-8 cannot encode; such a string
    parses fine here and then breaks the Kafka envelope's serialisation much later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_problem(value: object, *, depth: int = 0) -> str | None:
    """Why `value` is not plain, finite JSON within the depth bound; None if it is."""
    if depth > MAX_EXTRA_DEPTH:
        return f"nested deeper than {MAX_EXTRA_DEPTH} levels"
    if isinstance(value, str):
        return None if _utf8(value) else "contains a string that is not valid Unicode"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "contains a non-finite number"
    if isinstance(value, NonFinite):
        return f"contains {value.text}, which is not JSON"
    if isinstance(value, list):
        for item in value:
            problem = json_problem(item, depth=depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "has a non-string key"
            if not _utf8(key):
                return "has a key that is not valid Unicode"
            problem = json_problem(item, depth=depth + 1)
            if problem:
                return problem
        return None
    return f"contains a {type(value).__name__}, which is not JSON"


def _exact_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and _INT_MIN <= value <= _INT_MAX


def _check(kind: _Kind, value: object) -> tuple[object, str | None]:
    """Check one wire value; returns (value for the model, problem or None)."""
    if kind in ("opt_int", "opt_str") and value is None:
        return None, None
    if kind in ("int", "opt_int"):
        if _exact_int(value):
            return value, None
        return None, f"must be an integer, got {type_name(value)}"
    if kind in ("str", "opt_str"):
        if not isinstance(value, str):
            return None, f"must be a string, got {type_name(value)}"
        if len(value) > MAX_STRING_CHARS:
            return None, f"is {len(value)} characters, above {MAX_STRING_CHARS}"
        if kind == "str" and not value:
            return None, "is empty"
        if not _utf8(value):
            return None, "is not valid Unicode"
        return value, None
    if kind == "timestamp":
        return _timestamp(value)
    # extra: null means "no extra" (3.x schema marks it nullable)
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return None, f"must be an object, got {type_name(value)}"
    problem = json_problem(value, depth=1)
    return (None, problem) if problem else (value, None)


def _timestamp(value: object) -> tuple[object, str | None]:
    if not isinstance(value, str):
        return None, f"must be an ISO-8601 string, got {type_name(value)}"
    if len(value) > 64:
        return None, "is too long for a timestamp"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None, "is not an ISO-8601 time"
    if parsed.tzinfo is None:
        return None, "has no time zone"
    try:
        return parsed.astimezone(UTC), None
    except OverflowError:
        return None, "is out of range"


def _row_label(index: int | None, event_id: int | None) -> str:
    parts = []
    if event_id is not None:
        parts.append(f"event {event_id}")
    if index is not None:
        parts.append(f"row {index}")
    return " ".join(parts) or "event"


def parse_event(
    row: object, *, schema: Schema, where: str, index: int | None = None
) -> SourceEvent:
    """Validate one listing row into a `SourceEvent`; raises `InvalidRow` naming the field,
    with the row's id when it parses.

    Not its timestamp, on purpose: given a position the poller publishes the rows before the
    bad one and holds the rest, and on 2.x that path published a row twice and lost another
    in page walks over tied timestamps (found with randomised walks over the fake source).
    Without a position the whole batch waits until the row heals or is skipped, as before.
    """
    if not isinstance(row, dict):
        shape = f"{type_name(row)}, not an object"
        raise InvalidRow(f"{where}: {_row_label(index, None)} is {shape}", problem=shape)
    raw_id = row.get("id")
    event_id = raw_id if _exact_int(raw_id) else None
    label = _row_label(index, event_id)

    def invalid(what: str) -> InvalidRow:
        return InvalidRow(
            f"{where}: {label}: {what}",
            problem=f"{where}: {what}",
            event_id=event_id,
        )

    values: dict[str, Any] = {}
    for wire, (attr, kind) in _FIELDS[schema].items():
        if wire not in row:
            if kind in ("int", "str", "timestamp"):
                raise invalid(f"field '{wire}' is missing")
            continue
        value, problem = _check(kind, row[wire])
        if problem:
            raise invalid(f"field '{wire}' {problem}")
        values[attr] = value
    try:
        return SourceEvent.model_validate(values, strict=True)
    except ValidationError as exc:
        wire_names = {attr: wire for wire, (attr, _) in _FIELDS[schema].items()}
        details = "; ".join(
            f"field '{wire_names.get(str(err['loc'][0]), err['loc'][0]) if err['loc'] else '?'}'"
            f" {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False, include_context=False)
        )
        raise invalid(details) from None


def parse_event_page(body: object, *, schema: Schema, where: str) -> EventPage:
    """Validate a listing body; bad rows go to `invalid`, a bad shape raises `BadResponse`."""
    key = LIST_KEYS[schema]
    if not isinstance(body, dict):
        raise BadResponse(f"{where}: expected a JSON object with '{key}', got {type_name(body)}")
    rows = body.get(key)
    if not isinstance(rows, list):
        got = "nothing" if key not in body else type_name(rows)
        raise BadResponse(f"{where}: expected '{key}' to be an array, got {got}")
    events: list[SourceEvent] = []
    invalid: list[InvalidRow] = []
    for index, row in enumerate(rows):
        try:
            events.append(parse_event(row, schema=schema, where=where, index=index))
        except InvalidRow as exc:
            invalid.append(exc)
    total = body.get("total_entries")
    return EventPage(
        events=events,
        total_entries=total if _exact_int(total) and total >= 0 else None,
        invalid=invalid,
    )


def check_page_size(page: EventPage, *, limit: int, where: str) -> EventPage:
    """Refuse a page holding more rows than were asked for.

    Both APIs answer ``limit`` rows at most (a single SQL ``LIMIT``). The cursors page by
    offset, advancing by the rows a page held; a page with more rows than positions (a
    duplicated row, a proxy splicing two answers) would move the offset past rows never
    read, and the checkpoint could then pass them. Such an answer is no page of this API.
    """
    rows = len(page.events) + len(page.invalid)
    if rows > limit:
        raise BadResponse(f"{where}: {rows} rows in a page of at most {limit}")
    return page


def parse_posted_event(
    body: object, *, schema: Schema, where: str, requested_uri: str
) -> PostedEvent:
    """Read a POST answer. Lenient on size: the event exists; only id and extra matter.

    No `MAX_EXTRA_BYTES` check here: refusing to read back an event that the server already
    created would only turn a success into an error the caller cannot act on.
    """
    if not isinstance(body, dict):
        raise BadResponse(
            f"{where}: expected the created event as a JSON object, got {type_name(body)}"
            " (the event was probably created)"
        )
    raw_id = body.get("id")
    if not _exact_int(raw_id):
        raise BadResponse(
            f"{where}: created event has no integer 'id' (got {type_name(raw_id)};"
            " the event was probably created)"
        )
    uri_key = "dataset_uri" if schema == "v1" else "uri"
    raw_uri = body.get(uri_key)
    uri, uri_problem = _check("str", requested_uri if raw_uri is None else raw_uri)
    extra, extra_problem = _check("extra", body.get("extra"))
    for field, problem in ((uri_key, uri_problem), ("extra", extra_problem)):
        if problem:
            raise BadResponse(
                f"{where}: created event {raw_id}: field '{field}' {problem}"
                " (the event was created)"
            )
    if not isinstance(uri, str) or not isinstance(extra, dict):  # unreachable; narrows types
        raise BadResponse(f"{where}: created event {raw_id} is malformed")
    key = body.get("partition_key") if schema == "v2" else None
    return PostedEvent(
        id=raw_id, uri=uri, extra=extra, partition_key=key if isinstance(key, str) else None
    )


def queued_count(body: object, *, where: str) -> int:
    """Rows in a queued-events answer (both APIs: ``{"queued_events": [...], ...}``).

    The rows are counted, not ``total_entries`` trusted, and each must name its ``dag_id``:
    a garbled answer must not read as "consumed" and let the next event fold into a run.
    """
    if not isinstance(body, dict):
        raise BadResponse(f"{where}: expected a JSON object, got {type_name(body)}")
    rows = body.get("queued_events")
    if not isinstance(rows, list):
        shown = type_name(rows)
        raise BadResponse(f"{where}: expected 'queued_events' to be an array, got {shown}")
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("dag_id"), str):
            raise BadResponse(f"{where}: a queued event has no string 'dag_id'")
    return len(rows)


def page_params(query: EventQuery) -> dict[str, str | int]:
    """limit/offset/order_by shared by both listings, checked before anything is sent.

    ``limit=0`` means "server default" in 2.x and "no rows" in 3.x; a negative offset is
    a 400 or 422. Neither is something a caller means, so both are refused here.
    """
    if query.limit < 1:
        raise BadRequest(f"page limit must be at least 1, got {query.limit}")
    if query.offset < 0:
        raise BadRequest(f"offset must not be negative, got {query.offset}")
    return {
        "limit": query.limit,
        "offset": query.offset,
        "order_by": "timestamp" if query.ascending else "-timestamp",
    }


#: The first Airflow whose create-event body takes ``partition_key`` (AIP-76; 3.0 and 3.1
#: forbid unknown fields, so sending it there is a 422).
PARTITION_KEY_SINCE = (3, 2)


def supports_partition_key(version: str | None) -> bool:
    """Whether an Airflow of this version string takes ``partition_key`` on create.

    Unknown or unreadable versions count as not: the key then stays in the marker only,
    which loses nothing, where guessing wrong would make every write a 422.
    """
    if not version:
        return False
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or "-")
    except (IndexError, ValueError):
        return False
    return (major, minor) >= PARTITION_KEY_SINCE


def format_timestamp(value: datetime) -> str:
    """UTC with microseconds and a ``Z`` (3.x answers a naive time with HTTP 500, and an
    unencoded ``+00:00`` turns into a space; ``Z`` sidesteps both)."""
    if value.tzinfo is None:
        raise BadRequest("timestamp_gte needs a time zone (Airflow 3 answers naive times with 500)")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_uri(uri: str) -> str:
    """Refuse URIs that would change the meaning of a request before it is sent."""
    if not isinstance(uri, str) or not uri:
        raise BadRequest("asset URI must be a non-empty string")
    if len(uri) > MAX_STRING_CHARS:
        raise BadRequest(f"asset URI is {len(uri)} characters, above {MAX_STRING_CHARS}")
    return uri


def dumps_body(body: Mapping[str, object]) -> bytes:
    """Serialise a request body strictly (no NaN, no arbitrary objects); BadRequest if not JSON."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"request body is not JSON-serialisable: {type(exc).__name__}") from None
