"""`verify`: the window, what is expected, what was delivered, over fake instances."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_asset_sync.api.events import MARKER_KEY, Marker
from airflow_asset_sync.api.spec import SyncSpec
from airflow_asset_sync.clients.airflow.base import Unavailable
from airflow_asset_sync.worker import verify
from airflow_asset_sync.worker.verify import BadWindow, Window, parse_window

from .fakes import T0, FakeAirflow

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
A, B = "http://airflow-a:8080", "http://airflow-b:8080"
SYNC = "team/s"


def spec(**target: Any) -> SyncSpec:
    return SyncSpec.model_validate(
        {
            "source": {"url": A},
            "targets": [{"name": "b", "url": B, **target}],
            "assets": {"exclude": [{"glob": "*scratch*"}]},
        }
    )


def marker(event_id: int, *, sync: str = SYNC, origin: str = A) -> dict[str, Any]:
    m = Marker(origin=origin, event_id=event_id, timestamp=T0, sync=sync)
    return {MARKER_KEY: m.to_json()}


#: A window around every fake event (they are all stamped near T0).
AROUND_T0 = Window(T0 - timedelta(hours=1), T0 + timedelta(hours=1))


async def run_verify(
    source: FakeAirflow,
    target: FakeAirflow,
    sync_spec: SyncSpec | None = None,
    window: Window = AROUND_T0,
) -> verify.Report:
    """`verify.verify` over one fake source and one fake target named `b`, quietly."""
    return await verify.verify(
        sync_spec or spec(),
        sync=SYNC,
        window=window,
        source=source.client(),
        targets={"b": target.client()},
        progress=lambda _: None,
    )


def test_window_from_durations_times_and_defaults() -> None:
    assert parse_window("24h", None, NOW) == Window(NOW - timedelta(hours=24), NOW)
    assert parse_window("2026-12-01T10:00:00Z", "30m", NOW) == Window(
        datetime(2026, 12, 1, 10, 0, tzinfo=UTC), NOW - timedelta(minutes=30)
    )
    # An end in the future is now: nothing later can have been delivered yet.
    assert parse_window("1h", "2027-01-01T00:00:00Z", NOW).until == NOW


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2027-01-01T00:00:00Z", None, "--since '2027-01-01T00:00:00Z' is not in the past"),
        ("1h", "2h", "--until '2h' is not after --since '1h'"),
        ("yesterday", None, "--since 'yesterday' is neither a duration"),
        ("2026-12-01T10:00:00", None, "needs a time zone offset"),
        ("1h", "noon", "--until 'noon' is neither"),
    ],
)
def test_a_window_that_is_not_in_the_past_is_refused_naming_the_flag(
    since: str, until: str | None, message: str
) -> None:
    with pytest.raises(BadWindow, match=message.replace("(", r"\(")):
        parse_window(since, until, NOW)


def test_expected_follows_the_poller_filter_and_skips_copies() -> None:
    source = FakeAirflow(api_version="v2")
    kept = source.emit("s3://a/orders")
    source.emit("s3://a/scratch")  # excluded by the filter
    source.emit("s3://a/orders", extra=marker(99, sync="other/s"))  # a copy: never forwarded
    assert verify.expected_events(source.rows, spec()) == {"s3://a/orders": [kept.id]}


def test_compare_lists_missing_and_duplicated_ids_per_asset_after_rewrite() -> None:
    target = spec(rewrite=[{"match": "^s3://old/", "replace": "s3://new/"}]).targets[0]
    expected = {"s3://old/x": [1, 2, 3], "s3://old/y": [4]}
    delivered: dict[str, Counter[int] | None] = {
        "s3://new/x": Counter({1: 1, 3: 2, 50: 1}),  # 50: outside the window, not ours to judge
        "s3://new/y": None,  # the target has no such asset
    }
    report = verify.compare(target, expected, delivered)
    x, y = report.assets
    assert (x.target_uri, x.expected, x.delivered, x.missing, x.duplicated) == (
        "s3://new/x",
        3,
        2,
        [2],
        {3: 2},
    )
    assert (y.in_target, y.missing) == (False, [4])
    assert not report.ok


def test_delivered_counts_only_this_source_and_sync() -> None:
    target = FakeAirflow(api_version="v2")
    target.emit("s3://x", extra=marker(1))
    target.emit("s3://x", extra=marker(1))
    target.emit("s3://x", extra=marker(2, sync="other/s"))
    target.emit("s3://x", extra=marker(3, origin="http://elsewhere:8080"))
    target.emit("s3://x")  # the target's own event
    assert verify.delivered_counts(target.rows, origin=A, sync=SYNC) == Counter({1: 2})


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_scan_reads_exactly_the_window_through_short_server_pages(version: str) -> None:
    # The server caps pages at 7 while the client asks for 10 (a maximum_page_limit below
    # ours): short pages are not the end.
    source = FakeAirflow(api_version=version, page_limit=10, server_limit=7)  # type: ignore[arg-type]
    window = Window(T0 + timedelta(seconds=10), T0 + timedelta(seconds=40))
    inside = []
    for second in range(0, 60):
        event = source.emit("s3://x", at=T0 + timedelta(seconds=second))
        if 10 <= second <= 40:
            inside.append(event.id)
    progress: list[str] = []
    events, invalid = await verify.scan_source(source.client(), window, progress=progress.append)
    assert [e.id for e in events] == inside
    assert invalid == 0
    # It stops once past the window instead of reading the whole history.
    assert len(source.requests) < 60 // 7 + 2


async def test_verify_end_to_end_over_fakes_reports_and_renders() -> None:
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v1")
    target.add_asset("s3://a/orders")
    ok = source.emit("s3://a/orders")
    lost = source.emit("s3://a/orders")
    parked = source.emit("s3://a/late")
    target.emit("s3://a/orders", extra=marker(ok.id))
    target.emit("s3://a/orders", extra=marker(ok.id))
    report = await run_verify(source, target)
    assert not report.ok
    by_uri = {a.source_uri: a for a in report.targets[0].assets}
    assert by_uri["s3://a/orders"].missing == [lost.id]
    assert by_uri["s3://a/orders"].duplicated == {ok.id: 2}
    assert by_uri["s3://a/late"].in_target is False
    assert by_uri["s3://a/late"].missing == [parked.id]
    table = verify.render(report, as_json=False)
    assert f"missing ids {lost.id}" in table and "asset not in target" in table
    assert table.endswith("NOT OK")
    data = json.loads(verify.render(report, as_json=True))
    assert data["ok"] is False
    (orders,) = [a for a in data["targets"][0]["assets"] if a["sourceUri"] == "s3://a/orders"]
    assert orders["duplicated"] == {str(ok.id): 2} and orders["missing"] == [lost.id]


async def test_a_complete_delivery_is_ok() -> None:
    source, target = FakeAirflow(api_version="v1"), FakeAirflow(api_version="v2")
    for _ in range(3):
        event = source.emit("s3://a/orders")
        target.emit("s3://a/orders", extra=marker(event.id))
    report = await run_verify(source, target)
    assert report.ok
    assert verify.render(report, as_json=False).endswith("ok: every event delivered once")


async def test_repair_writes_only_missing_events_of_assets_the_target_has() -> None:
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    target.add_asset("s3://new/orders")
    rewrite = [{"match": "^s3://old/", "replace": "s3://new/"}]
    sync_spec = spec(rewrite=rewrite)
    have = source.emit("s3://old/orders", extra={"rows": 1})
    lost = source.emit("s3://old/orders", extra={"rows": 2})
    source.emit("s3://old/late")  # the target has no such asset: parked, not repaired
    target.emit("s3://new/orders", extra=marker(have.id))
    before = await run_verify(source, target, sync_spec)
    plan = verify.plan_repair(before)
    assert plan == [verify.Repair(target="b", target_uri="s3://new/orders", event_ids=[lost.id])]
    assert "repair: 1 events to write" in verify.describe_plan(plan)
    assert await verify.repair(plan, before, targets={"b": target.client()}) == 1
    (copy,) = [e for e in target.rows if _marker_of(e.extra) == (A, lost.id, SYNC)]
    assert copy.uri == "s3://new/orders" and copy.extra["rows"] == 2
    after = await run_verify(source, target, sync_spec)
    orders = [a for a in after.targets[0].assets if a.source_uri == "s3://old/orders"]
    assert orders[0].ok
    assert not after.ok  # the absent asset's event is still missing: nothing was invented
    assert verify.plan_repair(after) == []


def _marker_of(extra: dict[str, Any]) -> tuple[str, int, str] | None:
    found = Marker.from_extra(extra)
    return found.key if found is not None else None


async def test_an_instance_that_cannot_be_read_is_named() -> None:
    source, target = FakeAirflow(api_version="v2"), FakeAirflow(api_version="v2")
    source.emit("s3://a/orders")
    target.list_failures.append(Unavailable("GET /api/v2/assets/events: ConnectError"))
    target.add_asset("s3://a/orders")
    with pytest.raises(verify.Unreadable, match=r"^target b \(http://airflow-b:8080\): Unavail"):
        await run_verify(source, target)
    source.list_failures.append(Unavailable("GET /api/v2/assets/events: ReadTimeout"))
    with pytest.raises(verify.Unreadable, match=r"^source \(http://airflow-a:8080\): .*Timeout"):
        await run_verify(source, target)
