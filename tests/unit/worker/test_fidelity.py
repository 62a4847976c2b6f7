"""Airflow 3.2+ fidelity on fakes: partition_key end to end, masked extra values, purge gaps.

The real-instance counterparts are in tests/integration/test_fidelity_real.py.
"""

from __future__ import annotations

import json
import logging

import pytest

from airflow_asset_sync.api.events import MARKER_KEY, Envelope, Marker, SourceEvent
from airflow_asset_sync.api.redaction import MASK, MAX_REPORTED_KEYS, masked_keys, sensitive_key
from airflow_asset_sync.api.spec import SyncSpec
from airflow_asset_sync.api.status import TargetStatus
from airflow_asset_sync.clients.airflow.base import AuthFailed
from airflow_asset_sync.worker import app
from airflow_asset_sync.worker.parking import ParkingLimits, ParkingLot

from .fakes import T0, FakeAirflow, Version, deliveries, envelope
from .test_poller import Rig as PollerRig
from .test_poller import at
from .test_replayer import Rig as ReplayerRig
from .test_replayer import source_event

# -- partition_key ----------------------------------------------------------------------------


def test_envelope_without_partition_key_is_byte_for_byte_the_old_message() -> None:
    event = SourceEvent(id=3, uri="s3://b/x", timestamp=T0, extra={"a": 1})
    data = Envelope(sync="ns/s", origin="http://a", event=event).to_bytes()
    assert b"partition_key" not in data
    # What an older replayer (whose SourceEvent forbids unknown fields) parses.
    assert set(json.loads(data)["event"]) == {
        "id",
        "uri",
        "name",
        "group",
        "asset_id",
        "extra",
        "timestamp",
        "source_dag_id",
        "source_task_id",
        "source_run_id",
        "source_map_index",
    }


def test_envelope_carries_partition_key_and_the_marker_keeps_it() -> None:
    event = SourceEvent(id=3, uri="s3://b/x", timestamp=T0, partition_key="eu|2026-12-01")
    env = Envelope(sync="ns/s", origin="http://a", event=event)
    back = Envelope.from_bytes(env.to_bytes())
    assert back.event.partition_key == "eu|2026-12-01"
    marker = env.target_extra()[MARKER_KEY]
    assert marker["partition_key"] == "eu|2026-12-01"
    parsed = Marker.from_extra(env.target_extra())
    assert parsed is not None and parsed.partition_key == "eu|2026-12-01"
    # Not part of the dedup key: a copy is the same delivery with or without it.
    assert parsed.key == ("http://a", 3, "ns/s")
    plain = Envelope(
        sync="ns/s", origin="http://a", event=event.model_copy(update={"partition_key": None})
    )
    assert "partition_key" not in plain.target_extra()[MARKER_KEY]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_replayer_sets_partition_key_where_the_target_takes_it(version: Version) -> None:
    rig = ReplayerRig(version=version)
    batch = deliveries(
        [envelope(source_event(5, partition_key="2026-12-01")), envelope(source_event(6))]
    )

    await rig.replayer.replay(batch, rig.stop)

    first, second = rig.written()
    # A 3.x target stores it on the event; a 2.x one cannot, and the marker has it in both.
    assert first.partition_key == ("2026-12-01" if version == "v2" else None)
    assert first.extra[MARKER_KEY]["partition_key"] == "2026-12-01"
    assert second.partition_key is None
    assert "partition_key" not in second.extra[MARKER_KEY]


def test_a_parked_event_keeps_its_partition_key() -> None:
    lot = ParkingLot(TargetStatus(name="t"), ParkingLimits())
    env = envelope(source_event(5, partition_key="p-7"))
    assert lot.park("s3://b/x", env, T0)
    parked = lot.head("s3://b/x")
    assert parked is not None and parked.partition_key == "p-7"
    assert parked.to_patch()["partitionKey"] == "p-7"


# -- masked extra values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "API_KEY",
        "api-key",
        "my.apikey",
        "x_token",
        "Secret",
        "dsn",
        "https_proxy",
        "webhook_url",
        "service_account_json",
        "Authorization",
    ],
)
def test_sensitive_keys_as_airflow_matches_them(key: str) -> None:
    assert sensitive_key(key)


@pytest.mark.parametrize("key", ["rows", "path", "author", "pass", "tok", "key"])
def test_ordinary_keys_are_not_sensitive(key: str) -> None:
    assert not sensitive_key(key)


def test_masked_keys_finds_masks_under_sensitive_keys_only_and_never_values() -> None:
    extra = {
        "rows": 10,
        "api_key": MASK,
        "note": MASK,  # a literal mask under an ordinary key is data
        "conn": {"password": MASK, "host": "db", "secret_parts": ["***", "***"]},
        "auth": {"token": "real-looking-value"},  # not masked: nothing to report
        "list": [{"access_token": MASK}],
        "password_len": 12,
    }
    assert masked_keys(extra) == [
        "api_key",
        "conn.password",
        "conn.secret_parts[0]",
        "conn.secret_parts[1]",
        "list[0].access_token",
    ]
    assert masked_keys({"rows": 1}) == []
    assert len(masked_keys({f"token{i}": MASK for i in range(50)})) == MAX_REPORTED_KEYS


async def test_poller_counts_masked_events_and_warns_once_per_asset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = PollerRig()
    rig.server.emit("s3://b/x", at=at(1), extra={"api_key": MASK, "n": 1})
    rig.server.emit("s3://b/x", at=at(2), extra={"api_key": MASK, "n": 2})
    rig.server.emit("s3://b/y", at=at(3), extra={"conn": {"password": MASK}})
    rig.server.emit("s3://b/y", at=at(4), extra={"note": MASK})  # not a sensitive key

    with caplog.at_level(logging.WARNING, logger="airflow_asset_sync.worker.poller"):
        await rig.poller.poll_once()

    assert rig.publisher.ids == [1, 2, 3, 4]  # copied as answered: nothing held back
    assert rig.publisher.published[0].event.extra["api_key"] == MASK
    assert rig.poller.status.events_redacted == 3
    assert rig.store.source_saves[-1].events_redacted == 3
    assert rig.metric("events_redacted") == 3
    warnings = [r for r in caplog.records if "masked" in r.getMessage()]
    assert [(r.__dict__["asset"], r.__dict__["keys"]) for r in warnings] == [
        ("s3://b/x", ["api_key"]),
        ("s3://b/y", ["conn.password"]),
    ]

    rig.server.emit("s3://b/x", at=at(5), extra={"token": MASK})
    with caplog.at_level(logging.WARNING, logger="airflow_asset_sync.worker.poller"):
        caplog.clear()
        await rig.poller.poll_once()
    assert rig.poller.status.events_redacted == 4
    assert not [r for r in caplog.records if "masked" in r.getMessage()]  # once per asset


# -- gaps (airflow db clean) --------------------------------------------------------------------


def purge_before(rig: PollerRig, cutoff: object) -> None:
    """What `airflow db clean --clean-before-timestamp` does to the event table."""
    rig.server.rows = [e for e in rig.server.rows if e.timestamp >= cutoff]  # type: ignore[operator]


def oldest_reads(rig: PollerRig) -> int:
    """Listings without a time filter in ascending order: only the gap check makes them."""
    return sum(
        1
        for kind, query in rig.server.requests
        if kind == "list_events" and query.ascending and query.timestamp_gte is None
    )


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_a_purge_past_the_checkpoint_is_reported_once_and_the_rest_flows(
    version: Version,
) -> None:
    rig = PollerRig(version=version)
    for i in range(3):
        rig.server.emit("s3://b/x", at=at(i))
    await rig.poller.poll_once()
    checkpoint = rig.poller.status.checkpoint.timestamp
    assert checkpoint == at(2)
    for _ in range(3):
        await rig.poller.poll_once()  # quiet polls re-read the checkpoint's events
    before = oldest_reads(rig)

    # The worker is stopped; events 4 and 5 are written and purged, event 6 survives.
    rig.server.emit("s3://b/x", at=at(10))
    rig.server.emit("s3://b/x", at=at(11))
    purge_before(rig, at(20))
    survivor = rig.server.emit("s3://b/x", at=at(30))

    await rig.poller.poll_once()

    status = rig.poller.status
    assert status.gaps == 1
    assert status.last_gap is not None
    assert status.last_gap.after == checkpoint
    assert status.last_gap.oldest_event_time == survivor.timestamp
    assert "purged" in status.last_gap.message
    assert rig.store.source_saves[-1].last_gap == status.last_gap
    assert rig.metric("source_gaps") == 1
    assert rig.publisher.ids[-1] == survivor.id  # what remains is delivered
    assert oldest_reads(rig) == before + 1

    for _ in range(3):
        await rig.poller.poll_once()
    assert status.gaps == 1  # the new checkpoint's events are there: nothing more to report


async def test_the_whole_history_purged_is_a_gap_with_no_oldest_event() -> None:
    rig = PollerRig()
    rig.server.emit("s3://b/x", at=at(1))
    await rig.poller.poll_once()
    purge_before(rig, at(100))

    await rig.poller.poll_once()
    await rig.poller.poll_once()

    assert rig.poller.status.gaps == 1  # checked once per checkpoint, not on every poll
    assert rig.poller.status.last_gap is not None
    assert rig.poller.status.last_gap.oldest_event_time is None


async def test_a_restart_does_not_report_the_same_gap_again() -> None:
    rig = PollerRig()
    rig.server.emit("s3://b/x", at=at(1))
    await rig.poller.poll_once()
    purge_before(rig, at(100))
    await rig.poller.poll_once()
    assert rig.poller.status.gaps == 1

    # A new process with the saved status, and still nothing newer in the source.
    again = PollerRig(server=rig.server, status=rig.store.source_saves[-1].model_copy(deep=True))
    await again.poller.poll_once()
    assert again.poller.status.gaps == 1
    assert again.metric("source_gaps") == 0


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_deleting_single_events_is_no_gap(version: Version) -> None:
    rig = PollerRig(version=version)
    rig.server.emit("s3://b/x", at=at(1))
    last = rig.server.emit("s3://b/x", at=at(2))
    await rig.poller.poll_once()
    # The checkpoint's own event is deleted, an older one is still there: no purge by age.
    rig.server.rows = [e for e in rig.server.rows if e.id != last.id]

    await rig.poller.poll_once()

    assert rig.poller.status.gaps == 0
    assert rig.metric("source_gaps") == 0


async def test_quiet_polls_never_ask_for_the_oldest_event() -> None:
    rig = PollerRig(start_from="latest")
    rig.server.emit("s3://b/x", at=at(1))
    for i in range(5):
        await rig.poller.poll_once()
        rig.server.emit("s3://b/x", at=at(2 + i))
    assert oldest_reads(rig) == 0
    assert rig.poller.status.gaps == 0


async def test_start_from_earliest_on_an_empty_source_checks_nothing() -> None:
    rig = PollerRig()
    await rig.poller.poll_once()
    await rig.poller.poll_once()
    assert rig.poller.status.gaps == 0
    assert rig.poller.status.last_gap is None


# -- check: which listed assets the source credentials cannot read -------------------------------


def _spec(include: list[dict[str, str]]) -> SyncSpec:
    return SyncSpec.model_validate(
        {
            "source": {"url": "http://a:8080"},
            "targets": [{"name": "b", "url": "http://b:8080"}],
            "assets": {"include": include},
        }
    )


def test_listed_assets_are_the_include_globs_without_wildcards() -> None:
    spec = _spec(
        [
            {"glob": "s3://b/x"},
            {"glob": "s3://b/*"},
            {"regex": "s3://b/y"},
            {"glob": "s3://b/x"},
            {"glob": "s3://b/[ab]"},
            {"glob": "s3://b/z"},
        ]
    )
    assert app.listed_assets(spec) == ["s3://b/x", "s3://b/z"]


async def test_check_names_the_assets_the_source_credentials_cannot_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = FakeAirflow(api_version="v2")
    server.add_asset("s3://b/x")
    server.add_asset("s3://b/y")
    # The first per-asset read is refused, as Airflow answers a user without the permission.
    server.list_failures.append(AuthFailed("GET http://a:8080/api/v2/assets/events: HTTP 403"))
    spec = _spec(
        [{"glob": "s3://b/x"}, {"glob": "s3://b/y"}, {"glob": "s3://b/gone"}, {"glob": "s3://*"}]
    )

    unreadable = await app._check_source_assets(server.client(), spec)

    assert unreadable == 1
    assert capsys.readouterr().out.splitlines() == [
        "unreadable: source: asset s3://b/x: GET http://a:8080/api/v2/assets/events: HTTP 403",
        "warning: source: asset s3://b/gone does not exist in the source"
        " (or these credentials cannot see it)",
        "note: source: 1 include pattern(s) with wildcards or regex not checked",
    ]


async def test_check_says_every_listed_asset_is_readable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = FakeAirflow(api_version="v1")
    server.add_asset("s3://b/x")
    assert await app._check_source_assets(server.client(), _spec([{"glob": "s3://b/x"}])) == 0
    assert capsys.readouterr().out == "ok: source: the credentials read every listed asset (1)\n"
