"""Parked events (an asset the target does not know yet) on the real rig.

Airflow 3.3 -> Airflow 2.11 through `airflow-asset-sync run -f`, over Kafka and over the
in-process channel: the events of five known assets all arrive, at normal latency, while
the sixth asset is unknown to the target and its events are parked; the worker is SIGKILLed
twice while they are parked; then the asset is created in the target and its parked events
arrive once each, in source order. Latency figures are printed (``-s`` shows them).
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

pytestmark = [pytest.mark.rig, pytest.mark.slow]

KNOWN_ASSETS = 5
KNOWN_PER_PHASE = 25  # two phases: 50 events on known assets
LATE_PER_PHASE = 10  # two phases: 20 events on the unknown asset


def _await(condition: Any, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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
    return out


def _produce(
    source: AirflowInstance, known: list[str], late: str, sent: dict[int, datetime]
) -> tuple[set[int], list[int]]:
    """The unknown asset's events first, then the known assets' (which must not wait)."""
    known_ids: set[int] = set()
    late_ids: list[int] = []
    with source.client() as client:
        for i in range(LATE_PER_PHASE):
            event = source.create_event(late, {"late": i}, client)
            late_ids.append(event["id"])
            sent[event["id"]] = _ts(event["timestamp"])
        for i in range(KNOWN_PER_PHASE):
            event = source.create_event(known[i % len(known)], {"i": i}, client)
            known_ids.add(event["id"])
            sent[event["id"]] = _ts(event["timestamp"])
    return known_ids, late_ids


@pytest.mark.parametrize("transport", ["kafka", "in-process"])
def test_unknown_asset_is_parked_while_the_rest_flows_and_delivered_once_later(
    transport: str,
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
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
            [("t", airflow2)],
            include=[*known, late],
            target_options={"t": {"onUnknownAsset": "retry"}},
            **kafka,
        )
    )
    sent: dict[int, datetime] = {}
    figures: dict[str, Any] = {"transport": transport}

    # Phase 1: the known assets' events arrive while the unknown one's are parked.
    known_ids, late_ids = _produce(airflow3, known, late, sent)
    started = time.monotonic()
    counts = await_delivery(airflow2, known, airflow3.url, known_ids, timeout_s=300)
    figures["phase1_known_all_arrived_s"] = round(time.monotonic() - started, 2)
    assert counts == dict.fromkeys(known_ids, 1)
    _await(lambda: proc.metric("aas_parked_events", target="t") == LATE_PER_PHASE, "parked")

    # SIGKILL while parked: the parked events are in the state file, not lost.
    proc.kill()
    parked = proc.state()["targets"][0]
    assert parked["parkedEvents"] == LATE_PER_PHASE
    assert [e["id"] for e in parked["parked"][0]["events"]] == late_ids
    proc.start()

    # Phase 2: more of both, then a second SIGKILL right after, mid-stream.
    more_known, more_late = _produce(airflow3, known, late, sent)
    known_ids |= more_known
    late_ids += more_late
    proc.kill()
    proc.start()
    started = time.monotonic()
    counts = await_delivery(airflow2, known, airflow3.url, known_ids, timeout_s=300)
    figures["phase2_known_all_arrived_after_restart_s"] = round(time.monotonic() - started, 2)
    assert counts == dict.fromkeys(known_ids, 1), "a known event duplicated across the kills"
    _await(lambda: proc.metric("aas_parked_events", target="t") == len(late_ids), "all parked")
    latencies = _latencies(airflow2, known, sent)
    figures["known_latency_p50_s"] = round(statistics.median(latencies), 3)
    figures["known_latency_max_s"] = round(max(latencies), 3)
    # Phase 1's events were written with no restart in their way.
    phase1 = sorted(_latencies(airflow2, known, {i: sent[i] for i in known_ids - more_known}))
    figures["known_latency_phase1_p50_s"] = round(statistics.median(phase1), 3)
    figures["known_latency_phase1_p95_s"] = round(phase1[int(len(phase1) * 0.95) - 1], 3)
    # (No latency bound: on this shared 2-core machine the Airflow 2 target took 2-5 s per
    # POST under load. The property is structural: every known event arrived while the
    # unknown asset did not exist in the target; before parking none would have.)

    # The consuming DAG is deployed in the target: the parked events arrive, once, in order.
    airflow2.add_assets([late])
    created = time.monotonic()
    counts = await_delivery(airflow2, [late], airflow3.url, set(late_ids), timeout_s=300)
    figures["parked_arrived_after_asset_created_s"] = round(time.monotonic() - created, 2)
    assert counts == dict.fromkeys(late_ids, 1)
    order = [
        int(e["extra"][MARKER]["event_id"])
        for e in airflow2.events(late)
        if isinstance(e["extra"].get(MARKER), dict)
    ]
    assert order == late_ids  # source order
    _await(lambda: proc.metric("aas_parked_events", target="t") == 0, "parked drained", 30)
    # Idle again: the lag is 0 (it used to freeze at the last event's age).
    _await(lambda: proc.metric("aas_lag_seconds", target="t") == 0.0, "lag 0 when idle", 30)
    _await(lambda: proc.state()["targets"][0].get("parked", []) == [], "state saved", 30)
    _await(lambda: proc.state()["targets"][0].get("lagSeconds") == 0.0, "status lag 0", 30)
    assert "Traceback" not in proc.log()
    print(f"\nPARKING FIGURES {figures}")
