"""Faults 1-4 of the reliability suite, each over a stream of 2,000 real events.

The product runs as a user runs it (`airflow-asset-sync run -f sync.yaml`, a real process)
from a real Airflow 3.3 to a second real Airflow 3.3 (the fastest writers on SQLite, so a
2,000-event stream takes about a minute), and each test breaks one real component while the
stream flows:

1. the worker is SIGKILLed at random points, at least 20 times (in-process channel; the Kafka
   variant is the long one: each Kafka restart waits ~8 s for its consumer group, so 20 kills
   take 3-4 minutes. It runs with ``AAS_RELIABILITY_LONG=1`` and in the soak, `bench.soak`);
2. the Kafka broker is stopped for 60 s and started again;
3. the target's API server is stopped for 2 minutes and started again;
4. the source is reached through a proxy that fails 20% of requests (5xx, hangs, resets).

The verdict is read from the target's own API and compared with the source's: every source
event of the stream's assets must be in the target exactly once (counted by marker).
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import httpx
import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.faultproxy import FaultProxy
from rig.kafka import KafkaBroker
from rig.sync import SyncProcess, sync_manifests
from support.stream import (
    EventStream,
    Verdict,
    await_verdict,
    delivery,
    kafka_sync,
    note,
    source_ids,
)

pytestmark = [pytest.mark.rig, pytest.mark.slow]

EVENTS = 2000
#: Kills of fault 1, the issue's minimum.
KILLS = 20
#: Also run the long variants (the benchmark tier's share of this suite).
LONG = os.environ.get("AAS_RELIABILITY_LONG") == "1"


def _metric(proc: SyncProcess, name: str, **labels: str) -> float:
    """A metric of the running process; 0 while it is starting (no endpoint yet)."""
    try:
        return proc.metric(name, **labels)
    except httpx.HTTPError:
        return 0.0


def _wait(condition: Any, what: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _final_verdict(
    source: AirflowInstance,
    target: AirflowInstance,
    uris: list[str],
    origin: str,
    proc: SyncProcess,
    *,
    timeout_s: float = 300,
) -> Verdict:
    """Everything arrived (or time is up); then a graceful stop and a final recount, so a
    duplicate written late (a retry still in flight) is caught too."""

    def alive() -> None:
        if not proc.server.running:
            raise AssertionError(f"the worker died:\n{proc.server.log_tail()}")

    verdict = await_verdict(source, target, uris, origin, timeout_s=timeout_s, alive=alive)
    proc.server.kill(signal.SIGTERM)
    assert proc.server.proc is not None
    assert proc.server.proc.wait(timeout=60) == 0, proc.server.log_tail()
    final = Verdict.of(source_ids(source, uris), delivery(target, uris, origin))
    assert final.expected == verdict.expected
    return final


# -- 1. the worker SIGKILLed at random points -------------------------------------------------


@pytest.mark.parametrize(
    "transport",
    [
        pytest.param(
            "kafka",
            marks=pytest.mark.skipif(
                not LONG, reason="long variant (3-4 min): AAS_RELIABILITY_LONG=1, or bench.soak"
            ),
        ),
        "in-process",
    ],
)
def test_worker_sigkilled_at_random_points_loses_and_duplicates_nothing(
    transport: str,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    """At least 20 SIGKILLs while 2,000 events flow. A quarter of the kills land during
    start-up (checkpoint load, Kafka group join, the first poll); the others after the
    worker has written to the target in this life, a random 0-1.5 s later: mid-batch,
    mid-POST, between a write and its commit, between a publish and its checkpoint."""
    started = time.monotonic()
    uris = assets.take(4)
    via_kafka = transport == "kafka"
    proc: SyncProcess = sync_runner(
        sync_manifests(
            "kill",
            airflow3,
            [("t", airflow3b)],
            include=uris,
            kafka=kafka.bootstrap if via_kafka else None,
            topic=kafka_topic if via_kafka else None,
        )
    )
    # Kafka restarts wait ~8 s for the consumer group (the dead member's session), so fewer
    # kills fit per minute: the stream is slower there, to spread 20 kills over it.
    rate = 12.0 if via_kafka else 30.0
    stream = EventStream(airflow3, uris, total=EVENTS, rate=rate, label="kill").start()
    rng = random.Random(20)
    kills = startup_kills = 0
    replayed = deduplicated = 0.0
    while kills < KILLS or not stream.done.is_set():
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.2, 3.0))  # a random point during start-up
            startup_kills += 1
        else:
            wrote = _wait(lambda: _metric(proc, "aas_events_replayed_total") >= 1, "a write", 60)
            if not wrote and stream.done.is_set():
                break  # nothing left to write: the stream is through
            assert wrote or proc.server.running, proc.server.log_tail()
            time.sleep(rng.uniform(0.0, 1.5))  # a random point mid-stream
        replayed += _metric(proc, "aas_events_replayed_total")
        deduplicated += _metric(proc, "aas_events_deduplicated_total")
        proc.kill()
        kills += 1
        proc.server.start()  # not waiting for ready: the next kill may land during start-up
    stream.join()
    proc.server.wait_ready(proc.ready, timeout_s=120, what="ready after the last kill")

    verdict = _final_verdict(airflow3, airflow3b, uris, airflow3.url, proc)
    note(
        f"fault1-sigkill-{transport}",
        events=verdict.expected,
        kills=kills,
        startup_kills=startup_kills,
        lost=len(verdict.lost),
        duplicated=len(verdict.duplicated),
        replayed_before_kills=replayed,
        deduplicated_after_restarts=deduplicated,
        stream_s=round(stream.duration_s, 1),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert kills >= KILLS
    assert verdict.expected >= EVENTS
    assert verdict.ok, verdict.summary()


# -- 2. the Kafka broker down for 60 s ------------------------------------------------------


def test_kafka_broker_down_60s_mid_stream_loses_and_duplicates_nothing(
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    """The broker JVM is killed (SIGKILL, a crash) early in the stream and started again 60 s
    later on the same log dir, while the stream goes on; the worker keeps running throughout."""
    started = time.monotonic()
    uris = assets.take(4)
    proc: SyncProcess = sync_runner(
        kafka_sync("broker", airflow3, airflow3b, uris, kafka, kafka_topic)
    )
    stream = EventStream(airflow3, uris, total=EVENTS, rate=30.0, label="broker").start()
    stream.wait_for(EVENTS // 20)
    assert _metric(proc, "aas_events_replayed_total") >= 1
    down_at = time.monotonic()
    kafka.stop(hard=True)
    try:
        time.sleep(60)  # the outage itself: 60 s, as the issue says
        assert proc.server.running, proc.server.log_tail()
        created_during = stream.created
    finally:
        kafka.start()
    outage_s = time.monotonic() - down_at
    stream.join()

    verdict = _final_verdict(airflow3, airflow3b, uris, airflow3.url, proc)
    note(
        "fault2-broker-down",
        events=verdict.expected,
        outage_s=round(outage_s, 1),
        created_before_restart=created_during,
        lost=len(verdict.lost),
        duplicated=len(verdict.duplicated),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert verdict.expected >= EVENTS
    assert verdict.ok, verdict.summary()


# -- 3. the target's API down for 2 minutes ----------------------------------------------------


def test_target_api_down_2min_mid_stream_loses_and_duplicates_nothing(
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    """The target's API server process is stopped for 2 minutes while the stream goes on
    (through Kafka, so the source side keeps publishing), then started again."""
    started = time.monotonic()
    uris = assets.take(4)
    proc: SyncProcess = sync_runner(
        kafka_sync("target", airflow3, airflow3b, uris, kafka, kafka_topic)
    )
    stream = EventStream(airflow3, uris, total=EVENTS, rate=40.0, label="target").start()
    stream.wait_for(EVENTS // 10)
    assert _metric(proc, "aas_events_replayed_total") >= 1
    down_at = time.monotonic()
    airflow3b.stop_api()
    try:
        time.sleep(120)  # the outage itself: 2 minutes, as the issue says
        assert proc.server.running, proc.server.log_tail()
        errors_during = _metric(proc, "aas_replay_errors_total", target="t")
    finally:
        airflow3b.start_api()
    outage_s = time.monotonic() - down_at
    stream.join()

    verdict = _final_verdict(airflow3, airflow3b, uris, airflow3.url, proc, timeout_s=420)
    note(
        "fault3-target-down",
        events=verdict.expected,
        outage_s=round(outage_s, 1),
        replay_errors_during_outage=errors_during,
        lost=len(verdict.lost),
        duplicated=len(verdict.duplicated),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert errors_during >= 1  # the outage was seen
    assert verdict.expected >= EVENTS
    assert verdict.ok, verdict.summary()


# -- 4. the source failing 20% of requests --------------------------------------------------------


def test_source_failing_20_percent_of_requests_loses_and_duplicates_nothing(
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    """The worker reaches the source only through `FaultProxy`, which fails 20% of requests
    (503, 502, 500, 504, hangs until the client's timeout, resets before and mid-answer).
    The HTTP client's own retries absorb most of them; to drive failures up to the poller
    too (a failed poll must not move the checkpoint), the source also goes hard down for a
    moment mid-stream (every request refused) until the worker has seen a poll fail."""
    started = time.monotonic()
    uris = assets.take(4)
    port = int(airflow3.url.rsplit(":", 1)[1])
    with FaultProxy(port, fault_rate=0.2, seed=4) as proxy:
        docs = kafka_sync("flaky", airflow3, airflow3b, uris, kafka, kafka_topic)
        sync = docs[-1]["spec"]
        sync["source"]["url"] = proxy.url
        sync["source"]["instanceId"] = airflow3.url  # markers name the source, not the proxy
        proc: SyncProcess = sync_runner(docs)
        stream = EventStream(airflow3, uris, total=EVENTS, rate=30.0, label="flaky").start()
        stream.wait_for(EVENTS * 2 // 5)
        before_burst = proxy.stats()
        weights = proxy.weights
        proxy.weights = {"503": 1.0, "reset": 1.0, "502": 1.0}
        proxy.fault_rate = 1.0
        burst_began = time.monotonic()
        assert _wait(lambda: _metric(proc, "aas_poll_errors_total") >= 1, "a failed poll", 90)
        burst_s = time.monotonic() - burst_began
        after_burst = proxy.stats()
        proxy.weights, proxy.fault_rate = weights, 0.2
        stream.join()
        verdict = await_verdict(airflow3, airflow3b, uris, airflow3.url, timeout_s=300)
        stats = proxy.stats() - after_burst + before_burst  # the 20% phases only
        poll_errors = _metric(proc, "aas_poll_errors_total")
        proxy.fault_rate = 0.0  # let the graceful stop below talk to the source cleanly
        final = _final_verdict(airflow3, airflow3b, uris, airflow3.url, proc)
    faults = stats["requests"] - stats["ok"]
    note(
        "fault4-flaky-source",
        events=final.expected,
        requests_at_20pct=stats["requests"],
        faults_at_20pct=faults,
        by_kind={k: v for k, v in stats.items() if k not in ("requests", "ok")},
        hard_down_s=round(burst_s, 1),
        worker_poll_errors=poll_errors,
        lost=len(final.lost),
        duplicated=len(final.duplicated),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert verdict.ok and final.ok, final.summary()
    assert final.expected >= EVENTS
    # Each injected hang costs the client its 15 s read timeout, so the request count varies
    # (145-166 in runs so far); 100 still pins the fraction to +-8% at two sigma.
    assert stats["requests"] >= 100, stats
    assert 0.12 <= faults / stats["requests"] <= 0.28, stats
    for kind in ("503", "500", "timeout", "reset", "reset_mid_response"):
        assert stats[kind] >= 1, f"no {kind} fault was injected: {stats}"
    assert "Traceback" not in proc.log()
