"""Delivery modes per target against real Airflow 2.11 / 3.3 targets with a consumer DAG.

A burst of events is created in the source; the sync (`run -f`, through a real Kafka broker)
writes it into a target where a DAG is scheduled on the asset, and the test counts what the
target's own scheduler made of it, read from the target's API:

- eachEvent: every event lands once; Airflow may fold them into fewer runs;
- oneRunPerEvent: one consumer run per event, each run consuming exactly one of them;
- coalesce: one target event listing every source id, one run, and `verify` finds none missing.

Then what a consumer that never runs does to oneRunPerEvent: a consumer scheduled on two
assets (Airflow's AND) keeps the first asset's event queued, so that asset's next events are
held (status `parked`, reason awaitingConsumer; metric) while another asset flows, and a
paused consumer holds nothing back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.cache import ROOT
from rig.sync import MARKER, await_delivery, sync_manifests
from support.live import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.slow]

N = 4
VERIFY = [sys.executable, "-m", "airflow_asset_sync", "verify"]
PAIRS = pytest.mark.parametrize(
    ("source_name", "target_name"),
    [("airflow2", "airflow3"), ("airflow3", "airflow2")],
    ids=["2.11-to-3.3", "3.3-to-2.11"],
)


def _markers(target: AirflowInstance, uri: str, origin: str) -> list[dict[str, Any]]:
    out = []
    for event in target.events(uri):
        marker = event["extra"].get(MARKER)
        if isinstance(marker, dict) and marker.get("origin") == origin:
            out.append(marker)
    return out


def _ids_in(marker: dict[str, Any]) -> list[int]:
    return [int(i) for i in marker.get("coalesced") or [marker["event_id"]]]


def _settled_runs(target: AirflowInstance, dag_id: str, uri: str) -> list[dict[str, Any]]:
    """The consumer's runs once the scheduler has taken everything queued for `uri`."""

    def probe() -> list[dict[str, Any]] | None:
        runs = target.dag_runs(dag_id)
        return runs if runs and not target.queued_dags(uri) else None

    return wait_for(probe, what=f"{dag_id} to consume every event of {uri}", timeout_s=90)


@PAIRS
@pytest.mark.parametrize("mode", ["eachEvent", "oneRunPerEvent", "coalesce"])
def test_a_burst_makes_the_runs_the_delivery_mode_promises(
    mode: str,
    source_name: str,
    target_name: str,
    assets: AssetPool,
    kafka: Any,
    kafka_topic: str,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    source: AirflowInstance = request.getfixturevalue(source_name)
    target: AirflowInstance = request.getfixturevalue(target_name)
    (uri,) = assets.take(1)
    dag_id = target.add_consumer([uri])
    delivery: dict[str, Any] = {"mode": mode}
    if mode == "coalesce":
        delivery["window"] = "4s"
    proc = sync_runner(
        sync_manifests(
            f"delivery-{mode.lower()}",
            source,
            [("t", target)],
            include=[uri],
            kafka=kafka.bootstrap,
            topic=kafka_topic,
            target_options={"t": {"delivery": delivery}},
        )
    )

    with source.client() as c:
        ids = [source.create_event(uri, {"n": i}, c)["id"] for i in range(N)]

    assert await_delivery(target, [uri], source.url, set(ids), timeout_s=120) == dict.fromkeys(
        ids, 1
    )
    markers = _markers(target, uri, source.url)
    if mode == "oneRunPerEvent":
        runs = target.wait_for_runs(dag_id, N, timeout_s=120)
        runs = _settled_runs(target, dag_id, uri)
        assert len(runs) == N, [r.get("dag_run_id") for r in runs]
        consumed = []
        for run in runs:
            ours = [
                e["extra"][MARKER]["event_id"]
                for e in target.run_events(dag_id, run["dag_run_id"])
                if MARKER in e["extra"]
            ]
            assert len(ours) == 1, (run["dag_run_id"], ours)  # each run: exactly one event
            consumed.extend(ours)
        assert sorted(consumed) == sorted(ids)
        assert len(markers) == N
    elif mode == "coalesce":
        assert len(markers) == 1, markers  # one target event for the burst
        assert _ids_in(markers[0]) == ids  # listing every source id, in order
        assert target.events(uri)[-1]["extra"]["n"] == N - 1  # the newest event's extra
        assert len(_settled_runs(target, dag_id, uri)) == 1
        assert proc.metric("aas_events_coalesced_total", target="t") == N - 1
        proc.stop()
        done = subprocess.run(
            [*VERIFY, "-f", str(proc.file), "--since", "10m", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout  # nothing missing, no duplicate
        assert json.loads(done.stdout)["ok"] is True
    else:
        assert len(markers) == N  # every event written, one by one
        runs = _settled_runs(target, dag_id, uri)
        assert 1 <= len(runs) <= N  # Airflow may fold the burst into fewer runs


@PAIRS
def test_a_consumer_that_never_runs_holds_only_its_asset_and_a_paused_one_nothing(
    source_name: str,
    target_name: str,
    assets: AssetPool,
    kafka: Any,
    kafka_topic: str,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    source: AirflowInstance = request.getfixturevalue(source_name)
    target: AirflowInstance = request.getfixturevalue(target_name)
    stuck, other, flowing, paused = assets.take(4)
    # Scheduled on `stuck` AND `other`: an event of `stuck` alone stays queued, no run.
    stuck_dag = target.add_consumer([stuck, other])
    flowing_dag = target.add_consumer([flowing])
    paused_dag = target.add_consumer([paused], paused=True)
    proc = sync_runner(
        sync_manifests(
            "delivery-stuck",
            source,
            [("t", target)],
            include=[stuck, flowing, paused],
            kafka=kafka.bootstrap,
            topic=kafka_topic,
            target_options={"t": {"delivery": {"mode": "oneRunPerEvent"}}},
        )
    )

    with source.client() as c:
        held = [source.create_event(stuck, {"n": i}, c)["id"] for i in range(3)]
        moving = [source.create_event(flowing, {"n": i}, c)["id"] for i in range(3)]
        unpaused = [source.create_event(paused, {"n": i}, c)["id"] for i in range(3)]

    # The other assets flow: all delivered, one run per event where the consumer runs.
    assert await_delivery(target, [flowing, paused], source.url, {*moving, *unpaused}) == (
        dict.fromkeys([*moving, *unpaused], 1)
    )
    assert len(target.wait_for_runs(flowing_dag, 3, timeout_s=120)) == 3
    assert target.dag_runs(paused_dag) == []  # paused: never queued, so nothing waited
    # The stuck asset: its first event is written and stays queued; the rest are held.
    assert [m["event_id"] for m in _markers(target, stuck, source.url)] == held[:1]
    assert target.queued_dags(stuck) == [stuck_dag]

    def held_in_status() -> list[int] | None:
        [status] = proc.state()["targets"]
        parked = {a["uri"]: a for a in status.get("parked", [])}
        if stuck not in parked:
            return None
        assert parked[stuck]["reason"] == "awaitingConsumer"
        return [e["id"] for e in parked[stuck]["events"]]

    assert wait_for(held_in_status, what="held events in the state file") == held[1:]
    assert proc.metric("aas_awaiting_consumer_events", target="t") == 2
    assert [s.get("unknownAssets", []) for s in proc.state()["targets"]] == [[]]

    # The consumer's other asset arrives (in the target itself): the run is created, the
    # queue empties, and the next held event goes in (then waits again, as the DAG does).
    target.create_event(other, {"side": "target"})
    wait_for(
        lambda: [m["event_id"] for m in _markers(target, stuck, source.url)] == held[:2],
        what="the next held event once the consumer ran",
        timeout_s=90,
    )
    assert len(target.dag_runs(stuck_dag)) == 1


@pytest.mark.parametrize("mode", ["oneRunPerEvent", "coalesce"])
def test_a_worker_killed_mid_delivery_delivers_each_event_once(
    mode: str,
    airflow2: AirflowInstance,
    airflow3: AirflowInstance,
    assets: AssetPool,
    kafka: Any,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    """SIGKILL while events are held (oneRunPerEvent) or gathered (coalesce), then restart."""
    (uri,) = assets.take(1)
    dag_id = airflow3.add_consumer([uri])
    delivery: dict[str, Any] = {"mode": mode}
    if mode == "coalesce":
        delivery["window"] = "5s"
    proc = sync_runner(
        sync_manifests(
            f"delivery-kill-{mode.lower()}",
            airflow2,
            [("t", airflow3)],
            include=[uri],
            kafka=kafka.bootstrap,
            topic=kafka_topic,
            target_options={"t": {"delivery": delivery}},
        )
    )
    with airflow2.client() as c:
        ids = [airflow2.create_event(uri, {"n": i}, c)["id"] for i in range(N)]

    if mode == "oneRunPerEvent":

        def holding() -> bool:
            [status] = proc.state()["targets"]
            return bool(status.get("parked"))

        wait_for(holding, what="held events in the state file", timeout_s=60)
    else:
        # Published to Kafka, and the replayer is gathering its window: nothing written yet.
        wait_for(
            lambda: proc.metric("aas_events_published_total") >= N,
            what="the burst in Kafka",
            timeout_s=60,
        )
        assert _markers(airflow3, uri, airflow2.url) == []
    proc.kill()
    proc.start()

    counts = await_delivery(airflow3, [uri], airflow2.url, set(ids), timeout_s=120)
    assert counts == dict.fromkeys(ids, 1)  # each once, nothing lost
    runs = _settled_runs(airflow3, dag_id, uri)
    if mode == "oneRunPerEvent":
        runs = airflow3.wait_for_runs(dag_id, N, timeout_s=120)
        assert len(runs) == N
    else:
        markers = _markers(airflow3, uri, airflow2.url)
        assert [i for m in markers for i in _ids_in(m)] == ids
        assert len(markers) == 1  # the window was gathered again after the restart
