"""Parked events (an asset the target does not know yet) on the real rig, at migration scale.

Airflow 3.3 -> Airflow 3.3 through `airflow-asset-sync run -f`, over Kafka and over the
in-process channel. One stream of 550 events: 500 on 20 assets the target knows and 50 on
one asset it does not (its consuming DAG "has not moved yet"), interleaved. The worker is
SIGKILLed three times mid-stream, while events are parked. Every known event arrives, once,
while the unknown asset still does not exist in the target; the 50 stay parked, in the
state file, in source order; then the asset is created in the target and the 50 arrive,
once each, in source order. The target's `parking` limits come from the spec.

Latency figures are printed (``-s`` shows them) but not asserted: speed is the benchmark's
to measure (`make bench`, section `parking`), against a run without a parked asset.
Airflow 2.x targets park on their own 404s too: `test_sync_real`'s unknown-asset tests.
"""

from __future__ import annotations

import secrets
import statistics
import time
from datetime import datetime
from typing import Any

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.sync import MARKER, await_delivery, sync_manifests
from support import live
from support.stream import EventStream, Verdict, delivery, source_ids

pytestmark = [pytest.mark.rig, pytest.mark.slow]

KNOWN_ASSETS = 20
KNOWN_EVENTS = 500
LATE_EVENTS = 50
RATE = 25.0  # events per second into the source: 22 s of stream
KILLS = 3


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _interleaved(known: list[str], late: str) -> list[str]:
    """A round-robin order with the unknown asset at 2 of every 22 slots: 500 + 50 of 550."""
    half = len(known) // 2
    return [*known[:half], late, *known[half:], late]


def _source_times(source: AirflowInstance, uris: list[str]) -> dict[int, datetime]:
    with source.client() as client:
        return {
            int(e["id"]): _ts(e["timestamp"])
            for uri in uris
            for e in source.events(uri, client)
            if MARKER not in e["extra"]
        }


def _latencies(target: AirflowInstance, uris: list[str], sent: dict[int, datetime]) -> list[float]:
    """Target write time minus source event time, per event (both clocks are this host's)."""
    out = []
    with target.client() as client:
        for uri in uris:
            for event in target.events(uri, client):
                marker = event["extra"].get(MARKER)
                if isinstance(marker, dict) and int(marker["event_id"]) in sent:
                    written = _ts(event["timestamp"])
                    out.append((written - sent[int(marker["event_id"])]).total_seconds())
    return sorted(out)


@pytest.mark.parametrize("transport", ["kafka", "in-process"])
def test_unknown_asset_is_parked_while_the_rest_flows_and_delivered_once_later(
    transport: str,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    known = assets.take(KNOWN_ASSETS)
    late = f"s3://aas-test/parked/{secrets.token_hex(4)}"
    airflow3.add_assets([late])  # the source knows it; the target does not, yet
    kafka: dict[str, Any] = {}
    if transport == "kafka":
        broker = request.getfixturevalue("kafka")
        kafka = {"kafka": broker.bootstrap, "topic": request.getfixturevalue("kafka_topic")}
    proc = sync_runner(
        sync_manifests(
            f"park-{transport}",
            airflow3,
            [("t", airflow3b)],
            include=[*known, late],
            target_options={
                "t": {"onUnknownAsset": "retry", "parking": {"maxEvents": 200, "maxAge": "1h"}}
            },
            **kafka,
        )
    )
    figures: dict[str, Any] = {"transport": transport}

    # One stream; three SIGKILLs while it runs and events are parked.
    total = KNOWN_EVENTS + LATE_EVENTS
    stream = EventStream(
        airflow3, _interleaved(known, late), total=total, rate=RATE, label=f"park-{transport}"
    ).start()
    for k in range(1, KILLS + 1):
        stream.wait_for(total * k // (KILLS + 1))
        live.wait_for(
            lambda: proc.metric("aas_parked_events", target="t") > 0,
            what="events parked",
            timeout_s=90,
        )
        proc.kill()
        proc.start()
    stream.join()

    known_ids = source_ids(airflow3, known)
    assert len(known_ids) == KNOWN_EVENTS
    started = time.monotonic()
    counts = await_delivery(airflow3b, known, airflow3.url, known_ids, timeout_s=300)
    figures["known_all_arrived_after_stream_s"] = round(time.monotonic() - started, 2)
    verdict = Verdict.of(known_ids, delivery(airflow3b, known, airflow3.url))
    assert verdict.ok, verdict.summary()
    assert counts == dict.fromkeys(known_ids, 1)

    # The 50 are parked, durably and in source order: the state file says so.
    with airflow3.client() as client:
        late_ids = [int(e["id"]) for e in airflow3.events(late, client)]
    assert len(late_ids) == LATE_EVENTS and late_ids == sorted(late_ids)
    live.wait_for(
        lambda: proc.metric("aas_parked_events", target="t") == LATE_EVENTS,
        what="all parked",
        timeout_s=90,
    )
    live.wait_for(
        lambda: proc.state()["targets"][0].get("parkedEvents") == LATE_EVENTS,
        what="state saved",
        timeout_s=90,
    )
    (parked,) = proc.state()["targets"][0]["parked"]
    assert [e["id"] for e in parked["events"]] == late_ids
    with pytest.raises(AssertionError, match="\\[\\]"):  # the target has no such asset yet
        airflow3b.asset_id(late)

    sent = _source_times(airflow3, known)
    latencies = _latencies(airflow3b, known, sent)
    figures["known_latency_p50_s"] = round(statistics.median(latencies), 3)
    figures["known_latency_p99_s"] = round(latencies[int(len(latencies) * 0.99) - 1], 3)
    figures["known_latency_max_s"] = round(latencies[-1], 3)

    # The consuming DAG is deployed in the target: the parked events arrive, once, in order.
    airflow3b.add_assets([late])
    created = time.monotonic()
    counts = await_delivery(airflow3b, [late], airflow3.url, set(late_ids), timeout_s=300)
    figures["parked_arrived_after_asset_created_s"] = round(time.monotonic() - created, 2)
    assert counts == dict.fromkeys(late_ids, 1)
    order = [
        int(e["extra"][MARKER]["event_id"])
        for e in airflow3b.events(late)
        if isinstance(e["extra"].get(MARKER), dict)
    ]
    assert order == late_ids  # source order
    live.wait_for(
        lambda: proc.metric("aas_parked_events", target="t") == 0,
        what="parked drained",
        timeout_s=30,
    )
    # Idle again: the lag is 0 (it used to freeze at the last event's age).
    live.wait_for(
        lambda: proc.metric("aas_lag_seconds", target="t") == 0.0,
        what="lag 0 when idle",
        timeout_s=30,
    )
    live.wait_for(
        lambda: proc.state()["targets"][0].get("parked", []) == [], what="state saved", timeout_s=30
    )
    live.wait_for(
        lambda: proc.state()["targets"][0].get("lagSeconds") == 0.0,
        what="status lag 0",
        timeout_s=30,
    )
    assert "Traceback" not in proc.log()
    print(f"\nPARKING FIGURES {figures}")
