"""A hostile source through the real clients into the real poller: the checkpoint holds.

Property tests (hypothesis). The source is an `httpx.MockTransport` that keeps a true,
valid history of asset events and answers listings the way Airflow 2.x (`/api/v1`, ordered by
timestamp only, ties in any order) or 3.x (`/api/v2`, ``timestamp_gte``, id tie-breaker)
does, except that a drawn plan spoils its answers: error statuses, transport errors (timeouts,
resets), bodies that are not JSON, truncated, oversized, of the wrong shape, and rows that are
type-confused, missing fields, duplicated or padded with unknown fields.

Everything between that transport and the checkpoint file is the product: `AirflowHttp`,
`AirflowV1Client`/`AirflowV2Client`, the version's cursor, `Poller` and `FileOffsetStore`
(the poller is even rebuilt from the file now and then, as after a restart). Properties:

- no unhandled exception: `poll_once` returns or raises an `AirflowError` (what the worker
  loop logs, counts and backs off on: the clear error);
- the checkpoint on disk never covers an event that was not published, and nothing that the
  source did not send verbatim is ever published (no coerced or half-parsed event);
- each event is published once, and once the hostility ends every event is published.

Spoiling is transient here (each answer is drawn afresh), so the poller's deliberate skip of
a row that fails validation poll after poll is switched off (`max_invalid_retries` huge):
no event may be lost. `test_a_row_that_never_parses_is_held_then_skipped_and_counted` pins
what happens to a row that stays broken.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_asset_sync.api.spec import AssetFilter
from airflow_asset_sync.api.status import Checkpoint
from airflow_asset_sync.clients.airflow.base import AirflowError
from airflow_asset_sync.clients.airflow.http import AirflowHttp, HttpOptions
from airflow_asset_sync.clients.airflow.v1 import AirflowV1Client
from airflow_asset_sync.clients.airflow.v2 import AirflowV2Client
from airflow_asset_sync.worker.cursor import DEFAULT_OVERLAP, make_cursor
from airflow_asset_sync.worker.metrics import WorkerMetrics
from airflow_asset_sync.worker.offsets import FileOffsetStore
from airflow_asset_sync.worker.poller import Poller, PollSettings

from .fakes import FakeClock, FakePublisher

Api = Literal["v1", "v2"]
URL = "http://hostile-source.test"
ORIGIN = URL
T0 = datetime(2026, 3, 1, tzinfo=UTC)
#: Small pages, so a few dozen events already take several pages (and page boundaries).
PAGE = 7
#: Bound on response bodies given to the client; "oversized" answers go past it.
MAX_BODY = 256 * 1024
HOSTILE = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # tmp_path: each example uses its own file
    ],
)


# -- the source: a true history, answered as Airflow would, then spoiled --------------------


@dataclass
class Row:
    id: int
    uri: str
    timestamp: datetime
    extra: dict[str, Any]

    def wire(self, api: Api) -> dict[str, Any]:
        ts = self.timestamp.isoformat() if api == "v1" else _zulu(self.timestamp)
        row: dict[str, Any] = {
            "id": self.id,
            "extra": self.extra,
            "timestamp": ts,
            "source_dag_id": None,
            "source_task_id": None,
            "source_run_id": None,
            "source_map_index": -1,
            "created_dagruns": [],
        }
        if api == "v1":
            row.update(dataset_id=1, dataset_uri=self.uri)
        else:
            row.update(asset_id=1, uri=self.uri, name=self.uri, group="asset")
        return row


def _zulu(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: One spoiling of one answer: (kind, parameters drawn for it).
Spoil = tuple[str, dict[str, Any]]


@dataclass
class HostileSource:
    api: Api
    plan: list[Spoil]
    rng: random.Random
    rows: list[Row] = field(default_factory=list)
    requests: int = 0
    spoiled: int = 0

    def add(self, count: int, *, late: bool, step_ms: int) -> None:
        """New events: after the newest (ties when ``step_ms`` is 0), or a late row that
        commits with a time slightly behind the newest (inside the overlap window).

        Ties stay below ``PAGE - 1`` events per timestamp: the 2.x cursor proves a tie group
        complete by seeing it with a neighbour on both sides in one answer, which a group of
        ``page - 1`` or more cannot fit; such a group is logged and taken as read (the
        cursor's stated limit, far from real Airflow: 99 events stamped the same microsecond).
        """
        for _ in range(count):
            newest = max((r.timestamp for r in self.rows), default=T0)
            if late:
                ts, nudge = newest - timedelta(seconds=2), timedelta(milliseconds=-1)
            else:
                ts, nudge = newest + timedelta(milliseconds=step_ms), timedelta(milliseconds=1)
            while sum(1 for r in self.rows if r.timestamp == ts) >= PAGE - 2:
                ts += nudge
            event_id = len(self.rows) + 1
            uri = f"s3://hostile/{event_id % 3}"
            self.rows.append(Row(event_id, uri, ts, {"n": event_id, "nested": {"ok": [1, 2]}}))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        path = "/api/v1/datasets/events" if self.api == "v1" else "/api/v2/assets/events"
        if request.url.path != path:
            return httpx.Response(404, json={"detail": "Not Found"})
        body = self._listing(request.url.params)
        spoil = self.plan.pop(0) if self.plan else ("clean", {})
        if spoil[0] != "clean":
            self.spoiled += 1
        response = _spoiled(spoil, body, self.api)
        # The server's clock, as Airflow's HTTP Date gives it (whole seconds, floored), so the
        # cursor's settled bound is exercised and `covered` checks it.
        response.headers["Date"] = format_datetime(self.now().replace(microsecond=0), usegmt=True)
        return response

    def now(self) -> datetime:
        """The source's clock: a second past the newest row, so every late row (`add`, 2 s
        behind the newest) stays within the cursor's overlap of it, as in real Airflow."""
        return max((r.timestamp for r in self.rows), default=T0) + timedelta(seconds=1)

    def _listing(self, params: httpx.QueryParams) -> dict[str, Any]:
        limit = min(int(params["limit"]), PAGE)
        offset = int(params["offset"])
        rows = list(self.rows)
        if self.api == "v2":
            assert params["order_by"] == "timestamp"
            if "timestamp_gte" in params:
                lower = datetime.fromisoformat(params["timestamp_gte"])
                rows = [r for r in rows if r.timestamp >= lower]
            rows.sort(key=lambda r: (r.timestamp, r.id))
        else:
            assert "timestamp_gte" not in params
            # 2.x sorts by timestamp alone: rows sharing one come in any order, per request.
            self.rng.shuffle(rows)
            rows.sort(key=lambda r: r.timestamp, reverse=params["order_by"] == "-timestamp")
        key = "dataset_events" if self.api == "v1" else "asset_events"
        page = [r.wire(self.api) for r in rows[offset : offset + limit]]
        return {key: page, "total_entries": len(rows)}


def _confused(kind: str, value: object, pick: int) -> object:
    """A value of the wrong type (or out of bounds) for a field of this kind."""
    wrong: dict[str, list[object]] = {
        "int": ["12", 12.0, True, None, [1], {"id": 1}, 2**64],
        "str": [5, None, [], {}, "", "x" * 9000],
        "timestamp": ["2026-03-01T10:00:00", "yesterday", 1700000000, None, "9" * 80],
        "extra": [[1, 2], "text", 7, {"deep": _deep(80)}, {"big": "x" * (300 * 1024)}],
    }
    options = [v for v in wrong[kind] if v != value]
    return options[pick % len(options)]


def _deep(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


FIELD_KINDS = {
    "id": "int",
    "uri": "str",
    "dataset_uri": "str",
    "timestamp": "timestamp",
    "extra": "extra",
    "source_map_index": "int",
    "source_dag_id": "str",
}


def _spoiled(spoil: Spoil, body: dict[str, Any], api: Api) -> httpx.Response:
    kind, p = spoil
    key = "dataset_events" if api == "v1" else "asset_events"
    if kind == "clean":
        return httpx.Response(200, json=body)
    if kind == "status":
        return httpx.Response(p["code"], json={"detail": "spoiled"})
    if kind == "transport":
        raise p["error"]("spoiled by the hostile source")
    if kind == "html":
        return httpx.Response(
            200, content=p["text"].encode(), headers={"content-type": "text/html"}
        )
    if kind == "bytes":
        return httpx.Response(200, content=p["data"], headers={"content-type": "application/json"})
    raw = json.dumps(body).encode()
    if kind == "truncated":
        return httpx.Response(200, content=raw[: int(len(raw) * p["fraction"])])
    if kind == "oversized":
        padded = dict(body, padding="x" * (MAX_BODY + 1024))
        return httpx.Response(200, json=padded)
    if kind == "shape":
        shapes: list[object] = [
            body[key],
            None,
            "asset_events",
            42,
            {"total_entries": 3},
            {key: {"0": body[key]}},
            {key: None},
        ]
        return httpx.Response(200, json=shapes[p["which"] % len(shapes)])
    rows = body[key]
    if kind == "total":
        body["total_entries"] = p["value"]
        return httpx.Response(200, json=body)
    if not rows:
        return httpx.Response(200, json=body)
    index = p["row"] % len(rows)
    row = rows[index]
    if kind == "confuse":
        wire = p["field"]
        if wire == "uri" and api == "v1":
            wire = "dataset_uri"
        if wire == "dataset_uri" and api == "v2":
            wire = "uri"
        row[wire] = _confused(FIELD_KINDS[wire], row.get(wire), p["pick"])
    elif kind == "drop":
        wire = p["field"] if p["field"] != "uri" or api == "v2" else "dataset_uri"
        row.pop(wire if wire in row else "timestamp", None)
    elif kind == "not_object":
        rows[index] = p["value"]
    elif kind == "duplicate":
        rows.insert(index, dict(row))
    elif kind == "unknown_fields":
        row.update({"partition_key": "p", "future": {"x": 1}})
    return httpx.Response(200, json=body)


TRANSPORT_ERRORS = [
    httpx.ReadTimeout,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.PoolTimeout,
]

spoils: st.SearchStrategy[Spoil] = st.one_of(
    st.just(("clean", {})),
    st.builds(
        lambda c: ("status", {"code": c}),
        st.sampled_from([500, 502, 503, 504, 429, 400, 401, 403, 404, 302, 418]),
    ),
    st.builds(lambda e: ("transport", {"error": e}), st.sampled_from(TRANSPORT_ERRORS)),
    st.builds(lambda t: ("html", {"text": t}), st.just("<html>502 Bad Gateway</html>")),
    st.builds(lambda d: ("bytes", {"data": d}), st.binary(max_size=64)),
    st.builds(lambda f: ("truncated", {"fraction": f}), st.floats(0.0, 0.99)),
    st.just(("oversized", {})),
    st.builds(lambda w: ("shape", {"which": w}), st.integers(0, 20)),
    st.builds(
        lambda v: ("total", {"value": v}),
        st.sampled_from(["3", -1, 1.5, None, True, [], 10**30]),
    ),
    st.builds(
        lambda r, f, k: ("confuse", {"row": r, "field": f, "pick": k}),
        st.integers(0, 50),
        st.sampled_from(sorted(FIELD_KINDS)),
        st.integers(0, 10),
    ),
    st.builds(
        lambda r, f: ("drop", {"row": r, "field": f}),
        st.integers(0, 50),
        st.sampled_from(["id", "uri", "timestamp"]),
    ),
    st.builds(
        lambda r, v: ("not_object", {"row": r, "value": v}),
        st.integers(0, 50),
        st.sampled_from([None, 7, "row", [1, 2]]),
    ),
    st.builds(lambda r: ("duplicate", {"row": r}), st.integers(0, 50)),
    st.builds(lambda r: ("unknown_fields", {"row": r}), st.integers(0, 50)),
)


@dataclass(frozen=True)
class Step:
    """Between two polls: new events arrive (maybe a late one), the worker maybe restarts."""

    new_events: int
    step_ms: int
    late: bool
    restart: bool


steps = st.builds(
    Step,
    new_events=st.integers(0, 12),
    step_ms=st.sampled_from([0, 1, 250, 3000]),
    late=st.booleans(),
    restart=st.booleans(),
)


# -- the product, wired to the hostile source ---------------------------------------------


class Worker:
    """The real poller over the real client, checkpointing into a real offsets file."""

    def __init__(self, source: HostileSource, state: Path, *, max_invalid_retries: int) -> None:
        self.source = source
        self.state = state
        self.publisher = FakePublisher()
        self.metrics = WorkerMetrics()
        self.max_invalid_retries = max_invalid_retries
        self.client: AirflowV1Client | AirflowV2Client | None = None
        self.poller: Poller | None = None

    async def start(self) -> None:
        http = AirflowHttp(
            URL,
            options=HttpOptions(
                max_attempts=2, backoff_base_s=0.0, max_body_bytes=MAX_BODY, page_limit=PAGE
            ),
            transport=httpx.MockTransport(self.source.handler),
            sleep=_no_sleep,
            rng=random.Random(0),
        )
        self.client = AirflowV1Client(http) if self.source.api == "v1" else AirflowV2Client(http)
        status = (await FileOffsetStore(self.state).load()).source
        self.poller = Poller(
            settings=PollSettings(
                sync="tests/hostile",
                origin=ORIGIN,
                assets=AssetFilter(),
                start_from="earliest",
                poll_interval_s=1.0,
                max_invalid_retries=self.max_invalid_retries,
            ),
            cursor=make_cursor(self.client),
            publisher=self.publisher,
            store=FileOffsetStore(self.state),
            status=status,
            clock=FakeClock(),
            metrics=self.metrics,
        )

    async def restart(self) -> None:
        assert self.client is not None
        await self.client.aclose()
        await self.start()

    async def poll(self) -> AirflowError | None:
        """One poll; an `AirflowError` is the clear error the worker loop handles."""
        assert self.poller is not None
        error: AirflowError | None = None
        try:
            await self.poller.poll_once()
        except AirflowError as exc:
            error = exc
        assert error is None or str(error), "an error without a message is not a clear error"
        return error

    async def checkpoint(self) -> Checkpoint:
        return (await FileOffsetStore(self.state).load()).source.checkpoint

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def covered(row: Row, checkpoint: Checkpoint) -> bool:
    """Whether a read from `checkpoint` would never return `row` as new again."""
    if row.id in checkpoint.seen_ids:
        return True
    if checkpoint.timestamp is None:
        return False
    # The cursor's own lower bound (the overlap window, minus its settled part): a row below
    # it is never read again, so it must have been published already.
    lower = checkpoint.timestamp - DEFAULT_OVERLAP
    if checkpoint.settled_before is not None:
        lower = max(lower, min(checkpoint.settled_before, checkpoint.timestamp))
    return row.timestamp < lower


def assert_holds(source: HostileSource, worker: Worker, checkpoint: Checkpoint) -> None:
    published = worker.publisher.published
    ids = [e.event.id for e in published]
    assert len(ids) == len(set(ids)), f"published twice: {sorted(ids)}"
    by_id = {r.id: r for r in source.rows}
    for envelope in published:
        event = envelope.event
        truth = by_id[event.id]  # nothing published that the source does not hold
        assert (event.uri, event.timestamp, event.extra) == (
            truth.uri,
            truth.timestamp,
            truth.extra,
        ), f"event {event.id} was published altered"
    lost = sorted(r.id for r in source.rows if covered(r, checkpoint) and r.id not in set(ids))
    assert not lost, f"checkpoint {checkpoint} passed unpublished events {lost}"


async def _scenario(
    api: Api, plan: list[Spoil], schedule: list[Step], seed: int, state: Path
) -> None:
    source = HostileSource(api=api, plan=list(plan), rng=random.Random(seed))
    source.add(10, late=False, step_ms=400)
    worker = Worker(source, state, max_invalid_retries=10**6)
    await worker.start()
    try:
        for step in schedule:
            await worker.poll()
            assert_holds(source, worker, await worker.checkpoint())
            source.add(step.new_events, late=False, step_ms=step.step_ms)
            if step.late and source.rows:
                source.add(1, late=True, step_ms=0)
            if step.restart:
                await worker.restart()
        # The hostility is over: every event arrives within a few clean polls.
        source.plan.clear()
        for _ in range(len(source.rows) // PAGE + 4):
            error = await worker.poll()
            assert error is None, f"a clean source still fails: {error!r}"
            assert_holds(source, worker, await worker.checkpoint())
        missing = sorted({r.id for r in source.rows} - set(worker.publisher.ids))
        assert not missing, f"never published after the source recovered: {missing}"
    finally:
        await worker.close()


@pytest.mark.parametrize("api", ["v1", "v2"])
@HOSTILE
@given(
    plan=st.lists(spoils, max_size=40),
    schedule=st.lists(steps, min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_hostile_answers_never_move_the_checkpoint_past_an_unpublished_event(
    api: Api, plan: list[Spoil], schedule: list[Step], seed: int, tmp_path: Path
) -> None:
    state = tmp_path / f"offsets-{uuid.uuid4().hex}.json"  # hypothesis seeds `random`
    asyncio.run(_scenario(api, plan, schedule, seed, state))


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_every_kind_of_spoiling_is_survived_on_its_own(api: Api, tmp_path: Path) -> None:
    """Each kind alone, a few times in a row, then recovery: a readable map of the space."""
    examples: list[Spoil] = [
        ("status", {"code": 500}),
        ("status", {"code": 400}),
        ("status", {"code": 401}),
        ("status", {"code": 302}),
        ("transport", {"error": httpx.ReadTimeout}),
        ("transport", {"error": httpx.RemoteProtocolError}),
        ("html", {"text": "<html>oops</html>"}),
        ("bytes", {"data": b"\xff\xfe{"}),
        ("truncated", {"fraction": 0.5}),
        ("oversized", {}),
        ("shape", {"which": 0}),
        ("total", {"value": "3"}),
        ("confuse", {"row": 1, "field": "id", "pick": 0}),
        ("confuse", {"row": 2, "field": "timestamp", "pick": 0}),
        ("confuse", {"row": 3, "field": "extra", "pick": 4}),
        ("drop", {"row": 0, "field": "uri"}),
        ("not_object", {"row": 4, "value": None}),
        ("duplicate", {"row": 1}),
        ("unknown_fields", {"row": 1}),
    ]
    for number, spoil in enumerate(examples):
        plan = [spoil] * 6
        schedule = [Step(new_events=3, step_ms=300, late=False, restart=False)] * 4
        asyncio.run(_scenario(api, plan, schedule, number, tmp_path / f"s{number}.json"))


# -- a row that stays broken ------------------------------------------------------------------


class BrokenRowSource(HostileSource):
    """A 3.x source whose row `broken` always has an unreadable timestamp: it never parses."""

    broken: int = 3

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = self._listing(request.url.params)
        for row in body["asset_events"]:
            if row["id"] == self.broken:
                row["timestamp"] = "not a time"
        return httpx.Response(200, json=body)


def test_a_row_that_never_parses_is_held_then_skipped_and_counted(tmp_path: Path) -> None:
    """The checkpoint stays below a row that fails validation for `max_invalid_retries`
    polls in a row; then the row is skipped on purpose, counted in `eventsInvalid` and the
    metric, and the events after it flow. (Without that, one broken row would stop the
    sync for good: the lesser evil, stated in the poller's docstring.)"""

    async def run() -> None:
        source = BrokenRowSource(api="v2", plan=[], rng=random.Random(1))
        source.add(6, late=False, step_ms=500)
        worker = Worker(source, tmp_path / "offsets.json", max_invalid_retries=3)
        await worker.start()
        try:
            for _ in range(3):
                await worker.poll()
                checkpoint = await worker.checkpoint()
                assert not covered(source.rows[2], checkpoint)
                assert worker.publisher.ids == []  # position unknown: everything waits
            await worker.poll()
            checkpoint = await worker.checkpoint()
            assert worker.publisher.ids == [1, 2, 4, 5, 6]
            assert worker.metrics.value("aas_events_invalid_total", {}) == 1
            assert worker.poller is not None and worker.poller.status.events_invalid == 1
        finally:
            await worker.close()

    asyncio.run(run())
