"""The sync engine against real Airflow 2.11 / 3.3 and a real Kafka broker.

Every test runs the product as a user would (`airflow-asset-sync run -f sync.yaml`) and
judges it from outside: what the Airflow APIs list (counted by marker), the consumer DAG runs
the scheduler created, and the worker's own /metrics and state file.
"""

from __future__ import annotations

import random
import secrets
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from rig.airflow import CONSUMED, NEW_BUCKET, OLD_BUCKET, AirflowInstance, AssetPool
from rig.sync import MARKER, await_delivery, marker_counts, sync_manifests

pytestmark = [pytest.mark.rig, pytest.mark.slow]


def _await(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("source_name", "target_name", "consumed"),
    [("airflow2", "airflow3", 2), ("airflow3", "airflow2", 3), ("airflow3", "airflow3b", 4)],
    ids=["2.11-to-3.3", "3.3-to-2.11", "3.3-to-3.3"],
)
def test_events_cross_through_kafka_and_trigger_the_consumer(
    source_name: str,
    target_name: str,
    consumed: int,
    kafka: Any,
    kafka_topic: str,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    source: AirflowInstance = request.getfixturevalue(source_name)
    target: AirflowInstance = request.getfixturevalue(target_name)
    uri, dag_id = CONSUMED[consumed], f"consume_c{consumed}"
    runs_before = len(target.dag_runs(dag_id))
    sync_runner(
        sync_manifests(
            "cross",
            source,
            [("t", target)],
            include=[uri],
            kafka=kafka.bootstrap,
            topic=kafka_topic,
        )
    )

    created = {source.create_event(uri, {"n": i})["id"] for i in range(3)}

    counts = await_delivery(target, [uri], source.url, created)
    assert counts == dict.fromkeys(created, 1)
    newest = target.events(uri)[-1]
    assert newest["extra"]["airflow_asset_sync"]["sync"] == "tests/cross"
    assert newest["extra"]["n"] == 2  # the source's extra travels with the event
    target.wait_for_runs(dag_id, runs_before + 1)


def test_bidirectional_pair_delivers_once_and_never_bounces(
    airflow2: AirflowInstance,
    airflow3: AirflowInstance,
    assets: AssetPool,
    kafka: Any,
    sync_runner: Any,
) -> None:
    (uri,) = assets.take(1)
    a_to_b = sync_runner(
        sync_manifests(
            "a-to-b",
            airflow2,
            [("b", airflow3)],
            include=[uri],
            kafka=kafka.bootstrap,
            topic=f"bidi-ab-{secrets.token_hex(3)}",
        ),
        name="ab",
    )
    b_to_a = sync_runner(
        sync_manifests(
            "b-to-a",
            airflow3,
            [("a", airflow2)],
            include=[uri],
            kafka=kafka.bootstrap,
            topic=f"bidi-ba-{secrets.token_hex(3)}",
        ),
        name="ba",
    )

    from_a = {airflow2.create_event(uri, {"side": "a"})["id"] for _ in range(3)}
    from_b = {airflow3.create_event(uri, {"side": "b"})["id"] for _ in range(3)}

    assert await_delivery(airflow3, [uri], airflow2.url, from_a) == dict.fromkeys(from_a, 1)
    assert await_delivery(airflow2, [uri], airflow3.url, from_b) == dict.fromkeys(from_b, 1)
    # Each poller has now also read the 3 copies the other side wrote; it must have dropped
    # them as synced events. Await that, then nothing can bounce any more.
    _await(
        lambda: a_to_b.metric("aas_events_filtered_total", reason="synced") >= 3,
        "a->b to drop copies",
    )
    _await(
        lambda: b_to_a.metric("aas_events_filtered_total", reason="synced") >= 3,
        "b->a to drop copies",
    )
    assert marker_counts(airflow2, [uri], airflow3.url) == dict.fromkeys(from_b, 1)
    assert marker_counts(airflow3, [uri], airflow2.url) == dict.fromkeys(from_a, 1)
    assert len(airflow2.events(uri)) == 6
    assert len(airflow3.events(uri)) == 6


def test_filters_and_rewrite_rules_on_a_mixed_set(
    airflow3: AirflowInstance, airflow2: AirflowInstance, assets: AssetPool, sync_runner: Any
) -> None:
    kept, excluded = assets.take(2)
    old, new = OLD_BUCKET[0], NEW_BUCKET[0]
    proc = sync_runner(
        sync_manifests(
            "mixed",
            airflow3,
            [("t", airflow2)],
            extra_spec={
                "assets": {
                    "include": [
                        {"glob": kept},
                        {"glob": excluded},
                        {"regex": r"s3://old-bucket/data/d0"},
                    ],
                    "exclude": [{"glob": excluded}],
                }
            },
            target_options={
                "t": {
                    "rewrite": [
                        {"match": r"^s3://old-bucket/(.*)$", "replace": r"s3://new-bucket/\1"}
                    ]
                }
            },
        )
    )
    kept_ids = {airflow3.create_event(kept)["id"] for _ in range(2)}
    for _ in range(2):
        airflow3.create_event(excluded)
    old_ids = {airflow3.create_event(old)["id"] for _ in range(2)}
    other_before = marker_counts(airflow2, [old, excluded], airflow3.url)

    assert await_delivery(airflow2, [kept], airflow3.url, kept_ids) == dict.fromkeys(kept_ids, 1)
    assert await_delivery(airflow2, [new], airflow3.url, old_ids) == dict.fromkeys(old_ids, 1)
    _await(
        lambda: proc.metric("aas_events_filtered_total", reason="filter") >= 2,
        "the excluded events to be filtered",
    )
    assert marker_counts(airflow2, [old, excluded], airflow3.url) == other_before == {}


def test_sigkilled_worker_delivers_every_event_exactly_once(
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    assets: AssetPool,
    kafka: Any,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    uris = assets.take(3)
    proc = sync_runner(
        sync_manifests(
            "crash",
            airflow3,
            [("t", airflow2)],
            include=uris,
            kafka=kafka.bootstrap,
            topic=kafka_topic,
        )
    )
    created: set[int] = set()
    done = threading.Event()

    def produce() -> None:
        with airflow3.client() as client:
            for i in range(90):
                created.add(airflow3.create_event(uris[i % 3], {"i": i}, client)["id"])
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(7)
    kills = 0
    try:
        while not done.is_set() or kills < 3:
            # Kill only once the worker has made progress since the last start.
            _await(
                lambda: proc.metric("aas_events_replayed_total") >= 1, "progress before a kill", 90
            )
            time.sleep(
                rng.uniform(0.05, 0.6)
            )  # a random point mid-stream, not a wait for a condition
            proc.kill()
            kills += 1
            proc.start()
    finally:
        producer.join()
    counts = await_delivery(airflow2, uris, airflow3.url, created, timeout_s=180)
    duplicates = {k: v for k, v in counts.items() if v != 1}
    assert not duplicates, f"duplicated: {duplicates}"
    assert set(counts) == created
    assert kills >= 3


def test_unknown_asset_is_retried_until_it_exists(
    airflow3: AirflowInstance, airflow2: AirflowInstance, sync_runner: Any
) -> None:
    late = f"s3://aas-test/late/{secrets.token_hex(4)}"
    airflow3.add_assets([late])
    proc = sync_runner(
        sync_manifests(
            "late",
            airflow3,
            [("t", airflow2)],
            include=[late],
            target_options={"t": {"onUnknownAsset": "retry"}},
        )
    )
    event_id = airflow3.create_event(late)["id"]
    _await(
        lambda: proc.metric("aas_unknown_asset_retries_total", target="t") >= 1,
        "a 404 from the target",
    )

    airflow2.add_assets([late])  # the consuming DAG is deployed in the target later

    assert await_delivery(airflow2, [late], airflow3.url, {event_id}) == {event_id: 1}


def test_unknown_asset_is_counted_and_dropped_under_skip(
    airflow3: AirflowInstance, airflow2: AirflowInstance, assets: AssetPool, sync_runner: Any
) -> None:
    late = f"s3://aas-test/late/{secrets.token_hex(4)}"
    (known,) = assets.take(1)
    airflow3.add_assets([late])
    proc = sync_runner(
        sync_manifests(
            "skip",
            airflow3,
            [("t", airflow2)],
            include=[late, known],
            target_options={"t": {"onUnknownAsset": "skip"}},
        )
    )
    airflow3.create_event(late)
    after = airflow3.create_event(known)["id"]

    # The stream goes on past the unknown asset, and the drop is counted.
    assert await_delivery(airflow2, [known], airflow3.url, {after}) == {after: 1}
    assert proc.metric("aas_events_skipped_total", target="t") == 1


def test_sigterm_finishes_in_flight_work_and_a_restart_loses_nothing(
    airflow3: AirflowInstance, airflow2: AirflowInstance, assets: AssetPool, sync_runner: Any
) -> None:
    (uri,) = assets.take(1)
    proc = sync_runner(sync_manifests("term", airflow3, [("t", airflow2)], include=[uri]))
    with airflow3.client() as client:
        created = {airflow3.create_event(uri, {"i": i}, client)["id"] for i in range(20)}
    _await(lambda: proc.metric("aas_events_replayed_total") >= 1, "replay under way")

    proc.server.kill(signal.SIGTERM)
    assert proc.server.proc is not None
    assert proc.server.proc.wait(timeout=30) == 0
    log = proc.log()
    assert "worker stopped" in log
    assert "Traceback" not in log
    assert proc.state()["source"]["checkpoint"]["initialized"] is True

    proc.start()
    counts = await_delivery(airflow2, [uri], airflow3.url, created)
    assert counts == dict.fromkeys(created, 1)
    # Credentials were read from the manifest's Secrets; none of them ever reaches the log.
    for secret_value in (airflow2.password, airflow3.password):
        assert secret_value not in proc.log()
        assert secret_value not in str(proc.metrics())


def test_two_syncs_between_the_same_instances_each_deliver_once(
    airflow3: AirflowInstance, airflow3b: AirflowInstance, assets: AssetPool, sync_runner: Any
) -> None:
    """The rule for two syncs with one source and one target: each delivers each event once
    (the sync is part of the dedup key), also across a restart, where the restart check sees
    the other sync's copies and must not take them for its own."""
    (uri,) = assets.take(1)
    first = sync_runner(sync_manifests("pair-one", airflow3, [("t", airflow3b)], include=[uri]))
    second = sync_runner(
        sync_manifests("pair-two", airflow3, [("t", airflow3b)], include=[uri]), name="two"
    )
    created = {airflow3.create_event(uri, {"n": n})["id"] for n in range(4)}

    def copies() -> Counter[tuple[int, str]]:
        counted: Counter[tuple[int, str]] = Counter()
        for event in airflow3b.events(uri):
            marker = event["extra"].get(MARKER)
            if isinstance(marker, dict) and marker.get("origin") == airflow3.url:
                counted[(int(marker["event_id"]), marker["sync"])] += 1
        return counted

    expected = {(i, s): 1 for i in created for s in ("tests/pair-one", "tests/pair-two")}
    _await(lambda: copies() == expected, "one copy per sync of every event")
    second.kill()  # SIGKILL, then a restart: its first deliveries are checked in the target
    second.restart()
    more = {airflow3.create_event(uri, {"n": n})["id"] for n in range(4, 6)}
    expected |= {(i, s): 1 for i in more for s in ("tests/pair-one", "tests/pair-two")}
    _await(lambda: copies() == expected, "one copy per sync after the restart")
    assert first.metric("aas_events_deduplicated_total") == 0
