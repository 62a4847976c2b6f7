"""Push-assisted polling against real Airflow 2.11 and 3.3 with the listener plugin installed.

The plugin package (`plugins/airflow-asset-sync-listener`) is built and installed with uv
into a folder of its own, put on the PYTHONPATH of two Airflow instances this module starts
(so the rig's shared instances and its cached venvs stay as they are; `rig.listener`);
Airflow finds it through its `airflow.plugins` entry point, exactly as after a `pip install`.
Each instance pokes a fixed port, where the tests run the product's worker
(`airflow-asset-sync run`) or, for the "worker cannot be reached" case, a socket that
accepts and never answers.

Why `pollInterval: 1h`: without pokes the worker would read an event made after its first
poll only an hour later (the adaptive pace speeds up to 12 minutes), so an event arriving
within seconds proves that the poke, and nothing else, made the worker read.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from rig.airflow import AIRFLOW2, AIRFLOW3, AirflowInstance, AssetPool
from rig.cache import log
from rig.listener import install_plugin, plugin_env, with_push
from rig.procs import free_port
from rig.sync import SyncProcess, marker_counts, sync_manifests

pytestmark = [pytest.mark.rig, pytest.mark.slow]

TOKEN = "rig-poke-Tok-61ad0e"
#: With a synchronous poke, each event creation would wait this long on a silent worker.
POKE_TIMEOUT_S = 1.0
#: An event must reach the target this fast with pokes (typically ~0.3 s); an hour without.
FAST_S = 5.0


class Pushing:
    """An Airflow with the plugin installed, poking the worker port `port`."""

    def __init__(self, instance: AirflowInstance, port: int) -> None:
        self.instance = instance
        self.port = port

    @property
    def poke_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/poke"


def _pushing(version: str, factory: pytest.TempPathFactory) -> Iterator[Pushing]:
    base = factory.mktemp(f"push-{version}")
    site = install_plugin(version, base / "plugin")
    port = free_port()
    instance = AirflowInstance(
        version=version,
        home=base / "home",
        extra_env=plugin_env(
            site, url=f"http://127.0.0.1:{port}/poke", token=TOKEN, timeout_s=POKE_TIMEOUT_S
        ),
    )
    try:
        instance.start()
        yield Pushing(instance, port)
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def pushing2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushing]:
    yield from _pushing(AIRFLOW2, tmp_path_factory)


@pytest.fixture(scope="module")
def pushing3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushing]:
    yield from _pushing(AIRFLOW3, tmp_path_factory)


@pytest.fixture(params=["2.11-to-3.3", "3.3-to-2.11"])
def pair(request: pytest.FixtureRequest) -> tuple[Pushing, Pushing]:
    """(source, target): each direction, each instance the other's target."""
    a = request.getfixturevalue("pushing2")
    b = request.getfixturevalue("pushing3")
    return (a, b) if request.param == "2.11-to-3.3" else (b, a)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[SyncProcess]]:
    started: list[SyncProcess] = []
    yield started
    for proc in started:
        proc.stop()


def push_sync(
    name: str, source: Pushing, target: Pushing, uri: str, *, push: bool = True
) -> list[dict[str, Any]]:
    docs = sync_manifests(
        name,
        source.instance,
        [("t", target.instance)],
        include=[uri],
        extra_spec={"pollInterval": "1h"},
    )
    if push:
        with_push(docs, name=name, token=TOKEN)
    return docs


def start_worker(
    workers: list[SyncProcess], tmp_path: Path, docs: list[dict[str, Any]], port: int
) -> SyncProcess:
    proc = SyncProcess(tmp_path / f"worker-{len(workers)}", docs, metrics_port=port)
    workers.append(proc)
    return proc.start()


def arrival_s(source: AirflowInstance, target: AirflowInstance, uri: str, event_id: int) -> float:
    """Seconds from now until `event_id` of `source` is in `target` (at most 30)."""
    started = time.monotonic()
    with target.client() as client:
        while time.monotonic() - started < 30:
            counts = marker_counts_with(target, client, uri, source.url)
            if event_id in counts:
                return time.monotonic() - started
            time.sleep(0.05)
    raise AssertionError(f"event {event_id} not in the target within 30 s")


def marker_counts_with(
    target: AirflowInstance, client: httpx.Client, uri: str, origin: str
) -> set[int]:
    ids = set()
    for event in target.events(uri, client):
        marker = event["extra"].get("airflow_asset_sync")
        if isinstance(marker, dict) and marker.get("origin") == origin:
            ids.add(int(marker["event_id"]))
    return ids


def test_pokes_make_the_worker_read_each_sparse_event_at_once(
    pair: tuple[Pushing, Pushing], assets: AssetPool, workers: list[SyncProcess], tmp_path: Path
) -> None:
    source, target = pair
    (uri,) = assets.take(1)
    proc = start_worker(workers, tmp_path, push_sync("push-fast", source, target, uri), source.port)
    latencies = []
    for i in range(3):
        # Created after the worker's first poll: only a poke can make it read within the hour.
        event = source.instance.create_event(uri, {"n": i})
        latencies.append(arrival_s(source.instance, target.instance, uri, event["id"]))
    log(f"push {source.instance.version} -> {target.instance.version}: {latencies}")
    assert max(latencies) < FAST_S, latencies
    assert proc.metric("aas_pokes_total", result="accepted") >= 3
    assert (
        1
        <= proc.metric("aas_poke_polls_total")
        <= proc.metric("aas_pokes_total", result="accepted")
    )
    counts = marker_counts(target.instance, [uri], source.instance.url)
    assert sorted(counts.values()) == [1, 1, 1]  # each once
    assert TOKEN not in proc.log()


def _time_creations(source: AirflowInstance, uri: str, n: int) -> list[float]:
    out = []
    with source.client() as client:
        source.asset_id(uri, client)  # warm: the first request pays for logins
        for i in range(n):
            started = time.perf_counter()
            source.create_event(uri, {"timed": i}, client)
            out.append(time.perf_counter() - started)
    return out


def test_a_poke_that_cannot_reach_the_worker_slows_no_event_creation(
    pair: tuple[Pushing, Pushing], assets: AssetPool, workers: list[SyncProcess], tmp_path: Path
) -> None:
    source, target = pair
    (uri,) = assets.take(1)
    proc = start_worker(workers, tmp_path, push_sync("push-slow", source, target, uri), source.port)
    answered = _time_creations(source.instance, uri, 5)
    assert proc.metric("aas_pokes_total", result="accepted") >= 5
    proc.stop()
    # The worker's port now accepts connections and never answers: each poke waits out its
    # whole timeout (1 s) in the plugin's thread.
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", source.port))
    hole.listen(128)
    hole.settimeout(5)
    try:
        silent = _time_creations(source.instance, uri, 5)
        conn, _ = hole.accept()  # the pokes did try to reach it (queued in the backlog)
        conn.close()
    finally:
        hole.close()
    log(f"event creation {source.instance.version}: answered {answered}, silent {silent}")
    assert statistics.median(silent) < statistics.median(answered) + 0.3 * POKE_TIMEOUT_S
    assert max(silent) < POKE_TIMEOUT_S


def test_a_forged_or_missing_token_is_refused_and_counted_and_a_flood_is_limited(
    pushing2: Pushing,
    pushing3: Pushing,
    assets: AssetPool,
    workers: list[SyncProcess],
    tmp_path: Path,
) -> None:
    (uri,) = assets.take(1)
    proc = start_worker(
        workers, tmp_path, push_sync("push-auth", pushing2, pushing3, uri), pushing2.port
    )
    url = pushing2.poke_url
    assert httpx.post(url, timeout=5).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer forged"}, timeout=5).status_code == 403
    assert httpx.post(url, headers={"Authorization": TOKEN}, timeout=5).status_code == 401
    assert httpx.get(url, timeout=5).status_code == 405
    assert proc.metric("aas_pokes_total", result="unauthorized") == 2
    assert proc.metric("aas_pokes_total", result="forbidden") == 1
    assert proc.metric("aas_poke_polls_total") == 0  # none of them woke the poller

    reads_before = proc.metric("aas_api_request_duration_seconds_count", role="source")
    started = time.monotonic()
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as client:
        codes = [client.post(url).status_code for _ in range(300)]
    elapsed = time.monotonic() - started
    accepted, limited = codes.count(202), codes.count(429)
    assert accepted + limited == 300
    assert limited > 0
    # The burst (20) plus 10 a second: what the source can be made to serve, at most.
    assert accepted <= 20 + 10 * elapsed + 1
    assert proc.metric("aas_pokes_total", result="rate_limited") == limited
    # Reads of the source follow the accepted pokes, coalesced, never the flood.
    reads = proc.metric("aas_api_request_duration_seconds_count", role="source") - reads_before
    assert reads <= accepted * 6 + 6  # one read per wake plus at most five follow-ups
    assert TOKEN not in proc.log()


def test_events_made_while_the_worker_is_stopped_all_arrive_after_it_starts(
    pair: tuple[Pushing, Pushing], assets: AssetPool, workers: list[SyncProcess], tmp_path: Path
) -> None:
    source, target = pair
    (uri,) = assets.take(1)
    proc = start_worker(workers, tmp_path, push_sync("push-down", source, target, uri), source.port)
    first = source.instance.create_event(uri, {"n": "before"})["id"]
    arrival_s(source.instance, target.instance, uri, first)
    proc.stop()
    # The plugin pokes a closed port for each of these: refused, quietly.
    made = {source.instance.create_event(uri, {"n": i})["id"] for i in range(4)}
    proc.start()
    # Its first poll at start reads them: no poke needed.
    deadline = time.monotonic() + 60
    while not made <= set(marker_counts(target.instance, [uri], source.instance.url)):
        assert time.monotonic() < deadline, "events made while the worker was down never came"
        time.sleep(0.2)
    counts = marker_counts(target.instance, [uri], source.instance.url)
    assert counts == dict.fromkeys({first, *made}, 1)


def parse_ts(text: str) -> datetime:
    """Airflow timestamps: 2.x `...+00:00`, 3.x `...Z`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _trigger(instance: AirflowInstance, dag_id: str) -> str:
    """Start a run of `dag_id` now; its run id."""
    prefix = "/api/v1" if instance.major == 2 else "/api/v2"
    body: dict[str, Any] = {} if instance.major == 2 else {"logical_date": None}
    with instance.client() as client:
        response = client.post(f"{prefix}/dags/{dag_id}/dagRuns", json=body)
        response.raise_for_status()
        return str(response.json()["dag_run_id"])


def test_an_event_from_a_task_outlet_is_poked_too(
    pair: tuple[Pushing, Pushing], assets: AssetPool, workers: list[SyncProcess], tmp_path: Path
) -> None:
    """Not only REST: a task's outlet event (2.x: registered in the task's own process, which
    exits soon after; 3.x: by the API server for the task) pokes the worker."""
    source, target = pair
    (uri,) = assets.take(1)
    proc = start_worker(workers, tmp_path, push_sync("push-task", source, target, uri), source.port)
    _trigger(source.instance, "aas_producer")  # one task, outlets on every rig asset
    deadline = time.monotonic() + 180
    with target.instance.client() as client:
        while not (copies := marker_counts_with(target.instance, client, uri, source.instance.url)):
            assert time.monotonic() < deadline, "the task's event never reached the target"
            time.sleep(0.2)
    (event_id,) = copies
    made = next(e for e in source.instance.events(uri) if e["id"] == event_id)
    copy = next(
        e
        for e in target.instance.events(uri)
        if (e["extra"].get("airflow_asset_sync") or {}).get("event_id") == event_id
    )
    latency = (parse_ts(copy["timestamp"]) - parse_ts(made["timestamp"])).total_seconds()
    log(f"task outlet {source.instance.version} -> {target.instance.version}: {latency:.3f} s")
    # pollInterval is 1h: only a poke from the task's registration can explain this.
    assert latency < FAST_S
    assert proc.metric("aas_poke_polls_total") >= 1
