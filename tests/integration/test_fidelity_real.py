"""Airflow 3.2+ fidelity against real Airflow 2.11 / 3.3, through `run -f`.

- partition_key: a 3.3 source's partitioned event reaches another 3.3 with its key (and
  there triggers a consumer DAG on `PartitionedAssetTimetable`, for that key), and reaches
  a 2.11 with the key in the marker; in-process and through a real Kafka topic.
- Masked extra values: 3.3 answers ``"***"`` for keys that look sensitive; the sync copies
  the mask (it has nothing else), counts it in ``status.source.eventsRedacted`` and
  ``aas_events_redacted_total`` and warns once per asset, never printing a value (the
  targets' databases show what was really written). 2.11.2's listing does not mask: the
  value travels, and nothing is counted until a mask really is in the source (one written
  there, as a sync from a 3.x would).
- `check --connect` names the listed assets the source credentials cannot read (a 2.11
  user whose role lacks dataset reads) and those the source does not have.
- Gaps: with the worker stopped, events are written and ``airflow db clean`` purges them
  with everything older; started again, the worker reports the gap (status, metric, log)
  and delivers what is left. The purge cuts the shared instance's whole event history
  older than the cut, as the real command does; tests only ever look at their own events,
  all created after it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rig.airflow import AirflowInstance, AssetPool
from rig.cache import ROOT
from rig.sync import MARKER, SyncProcess, await_delivery, marker_counts, sync_manifests

pytestmark = [pytest.mark.rig, pytest.mark.slow]

PARTITIONED_CONSUMER = '''
"""A consumer on a partitioned schedule (Airflow 3.2+, AIP-76): one run per partition key."""
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, PartitionedAssetTimetable

with DAG(
    {dag_id!r},
    schedule=PartitionedAssetTimetable(assets=Asset({uri!r})),
    start_date=datetime(2024, 1, 1),
    catchup=False,
):
    EmptyOperator(task_id="consume")
'''

#: Looks like a secret, so Airflow masks it; distinctive, so the log can be searched for it.
SECRET_VALUE = "rig-extra-api-key-9f31c7d2"


def _await(condition: Any, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _copies(target: AirflowInstance, uri: str, origin: str) -> dict[int, dict[str, Any]]:
    """Source event id -> the target's copy (normalised by the rig)."""
    out = {}
    for event in target.events(uri):
        marker = event["extra"].get(MARKER)
        if isinstance(marker, dict) and marker.get("origin") == origin:
            out[int(marker["event_id"])] = event
    return out


@pytest.mark.parametrize("transport", ["in-process", "kafka"])
def test_partition_key_reaches_3_3_and_its_partitioned_consumer_and_the_2_11_marker(
    transport: str,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    airflow2: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    (uri,) = assets.take(1)
    dag_id = f"part_consumer_{secrets.token_hex(3)}"
    airflow3b.add_dag(dag_id, PARTITIONED_CONSUMER.format(dag_id=dag_id, uri=uri))
    through: dict[str, Any] = {}
    if transport == "kafka":  # the key rides in the Kafka message, not only in memory
        kafka = request.getfixturevalue("kafka")
        through = {"kafka": kafka.bootstrap, "topic": request.getfixturevalue("kafka_topic")}
    targets = [("b", airflow3b), ("old", airflow2)]
    sync_runner(sync_manifests("parts", airflow3, targets, include=[uri], **through))
    key = f"2026-12-01|{secrets.token_hex(2)}"

    partitioned = airflow3.create_event(uri, {"n": 1}, partition_key=key)
    plain = airflow3.create_event(uri, {"n": 2})
    assert partitioned["partition_key"] == key  # 3.3.2's create body takes it
    ids = {partitioned["id"], plain["id"]}

    for target in (airflow3b, airflow2):
        assert await_delivery(target, [uri], airflow3.url, ids) == dict.fromkeys(ids, 1)
    in_3 = _copies(airflow3b, uri, airflow3.url)
    assert in_3[partitioned["id"]]["partition_key"] == key
    assert in_3[partitioned["id"]]["extra"][MARKER]["partition_key"] == key
    assert in_3[plain["id"]]["partition_key"] is None
    assert "partition_key" not in in_3[plain["id"]]["extra"][MARKER]
    in_2 = _copies(airflow2, uri, airflow3.url)
    assert in_2[partitioned["id"]]["partition_key"] is None  # 2.x has no such field
    assert in_2[partitioned["id"]]["extra"][MARKER]["partition_key"] == key
    assert "partition_key" not in in_2[plain["id"]]["extra"][MARKER]

    # The target's scheduler made the partitioned consumer's run for exactly that key.
    runs = airflow3b.wait_for_runs(dag_id, 1)
    assert [run.get("partition_key") for run in runs] == [key]


@pytest.mark.parametrize(
    ("source_name", "target_name"),
    [("airflow3", "airflow2"), ("airflow2", "airflow3")],
    ids=["3.3-source", "2.11-source"],
)
def test_masked_extra_values_are_counted_and_warned_once_per_asset(
    source_name: str,
    target_name: str,
    assets: AssetPool,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    source: AirflowInstance = request.getfixturevalue(source_name)
    target: AirflowInstance = request.getfixturevalue(target_name)
    first, second = assets.take(2)
    proc: SyncProcess = sync_runner(
        sync_manifests("masked", source, [("t", target)], include=[first, second])
    )
    created = [
        source.create_event(first, {"api_key": SECRET_VALUE, "n": 1}),
        source.create_event(first, {"api_key": SECRET_VALUE, "n": 2}),
        source.create_event(second, {"conn": {"db_password": SECRET_VALUE}, "n": 3}),
        # What a source holds after a sync copied masks into it (or a task wrote one).
        source.create_event(second, {"token": "***", "n": 4}),
    ]
    ids = {e["id"] for e in created}
    listed = {e["id"]: e for u in (first, second) for e in source.events(u)}

    if source.major == 3:
        # Airflow's own answer: 3.3 masks what looks sensitive, at any depth.
        assert listed[created[0]["id"]]["extra"]["api_key"] == "***"
        assert listed[created[2]["id"]]["extra"]["conn"]["db_password"] == "***"
        expected, warned = 4, {first, second}
    else:
        # 2.11.2's /api/v1/datasets/events dumps extra as stored: nothing is masked.
        assert listed[created[0]["id"]]["extra"]["api_key"] == SECRET_VALUE
        expected, warned = 1, {second}

    assert await_delivery(target, [first, second], source.url, ids) == dict.fromkeys(ids, 1)
    copies = {**_copies(target, first, source.url), **_copies(target, second, source.url)}
    # What the target really stored (its database: a 3.x target masks its own answers too):
    # the mask from a 3.3 source, the value itself from a 2.11 one.
    stored = target.stored_extra(int(copies[created[0]["id"]]["id"]))
    assert stored["api_key"] == ("***" if source.major == 3 else SECRET_VALUE)
    assert target.stored_extra(int(copies[created[3]["id"]]["id"]))["token"] == "***"

    _await(
        lambda: proc.state()["source"].get("eventsRedacted") == expected,
        f"eventsRedacted == {expected}",
    )
    assert proc.metric("aas_events_redacted_total") == expected
    log = proc.log()
    warnings = [line for line in log.splitlines() if "masked values" in line]
    assert len(warnings) == len(warned)
    assert all(any(uri in line for line in warnings) for uri in warned)
    if source.major == 3:
        assert SECRET_VALUE not in log  # never given to us, never printed


@pytest.mark.parametrize(
    ("source_name", "target_name"),
    [("airflow3", "airflow2"), ("airflow2", "airflow3")],
    ids=["3.3-source", "2.11-source"],
)
def test_db_clean_past_the_checkpoint_is_reported_and_the_rest_is_delivered(
    source_name: str,
    target_name: str,
    assets: AssetPool,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    source: AirflowInstance = request.getfixturevalue(source_name)
    target: AirflowInstance = request.getfixturevalue(target_name)
    (uri,) = assets.take(1)
    proc: SyncProcess = sync_runner(sync_manifests("gap", source, [("t", target)], include=[uri]))
    read = source.create_event(uri, {"n": 0})
    await_delivery(target, [uri], source.url, {read["id"]})
    _await(
        lambda: read["id"] in proc.state()["source"]["checkpoint"].get("seenIds", []),
        "the checkpoint to cover the delivered event",
    )
    checkpoint = proc.state()["source"]["checkpoint"]["timestamp"]
    proc.stop()

    lost = [source.create_event(uri, {"n": i}) for i in (1, 2)]  # never read
    source.db_clean(before=datetime.now(UTC))
    assert {e["id"] for e in source.events(uri)} == set()  # the purge took them
    survivor = source.create_event(uri, {"n": 3})

    proc.start()
    assert await_delivery(target, [uri], source.url, {survivor["id"]})[survivor["id"]] == 1
    _await(lambda: proc.state()["source"].get("gaps") == 1, "the gap in status")
    gap = proc.state()["source"]["lastGap"]
    assert gap["after"] == checkpoint
    assert _same_time(gap["oldestEventTime"], survivor["timestamp"])
    assert "purged" in gap["message"]
    assert proc.metric("aas_source_gaps_total") == 1
    assert "source events were purged before they were read" in proc.log()
    counts = marker_counts(target, [uri], source.url)
    assert not {e["id"] for e in lost} & set(counts)  # gone before anyone read them


def _same_time(a: str, b: str) -> bool:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return parse(a) == parse(b)


def _check(manifests: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    file = tmp_path / f"check-{secrets.token_hex(3)}.yaml"
    file.write_text(yaml.safe_dump_all(manifests))
    return subprocess.run(
        [sys.executable, "-m", "airflow_asset_sync", "check", "-f", str(file), "--connect"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
        check=False,
    )


def test_check_names_the_assets_the_source_credentials_cannot_read(
    airflow2: AirflowInstance, airflow3: AirflowInstance, assets: AssetPool, tmp_path: Path
) -> None:
    (uri,) = assets.take(1)
    missing = f"s3://aas-test/not-deployed/{secrets.token_hex(3)}"
    include = [uri, missing, "s3://aas-test/pool/*"]

    # The rig's admin reads every asset; the one no DAG references is named as missing.
    done = _check(sync_manifests("chk", airflow2, [("t", airflow3)], include=include), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"warning: source: asset {missing} does not exist in the source" in done.stdout
    assert "ok: source: the credentials read every listed asset (2)" in lines
    assert "note: source: 1 include pattern(s) with wildcards or regex not checked" in lines

    # A 2.11 user whose role lacks "can read on Datasets": every listed asset is unreadable.
    role, user, password = "aas-no-datasets", f"reader-{secrets.token_hex(2)}", "rig-reader-Pw-4c1e"
    airflow2.airflow("roles", "create", role)
    airflow2.airflow(
        "users", "create", "--username", user, "--password", password, "--role", role,
        "--firstname", "No", "--lastname", "Datasets", "--email", f"{user}@rig.invalid",
    )  # fmt: skip
    manifests = sync_manifests("chk", airflow2, [("t", airflow3)], include=include)
    manifests[0]["stringData"] = {"username": user, "password": password}
    done = _check(manifests, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    unreadable = [line for line in done.stdout.splitlines() if line.startswith("unreadable:")]
    assert [line.split(": ")[2] for line in unreadable] == [f"asset {uri}", f"asset {missing}"]
    assert all("403" in line for line in unreadable), unreadable
    assert password not in done.stdout + done.stderr
