"""Replay on demand (`spec.replay`) against real Airflow instances, through `run -f`.

Airflow 3.3 -> Airflow 2.11 and another 3.3, the in-process channel. The source holds a day
of history (24 events an hour apart, their timestamps moved back in its database); a first
run delivers it; then every other copy is deleted from each target's database, as lost
writes would be, and more than two pages of newer events are written on one of the assets in
each target, so the copies still there are out of reach of the restart check (newest pages
only). A replay from 25 h ago with an id: afterwards `verify` finds nothing missing and
nothing duplicated, every event once in each target, `status.replay` Succeeded with counts.
The same id again reads nothing; a new id re-reads and writes nothing; a `from` in the future
and a target that is down fail the replay with a clear message and nothing written anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from rig.airflow import AirflowInstance, AssetPool
from rig.cache import ROOT
from rig.procs import free_port
from rig.sync import SyncProcess, await_delivery, marker_counts, sync_manifests

pytestmark = [pytest.mark.rig, pytest.mark.slow]

HOURS = 24
#: Newer events written on one asset in each target: beyond the 2 pages (of 100) the
#: replayer's restart check reads.
FILLER = 210
#: What `verify` compares: the replayed window.
WINDOW = ("--since", "25h", "--json")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _set_replay(proc: SyncProcess, replay: dict[str, Any], **target_url: str) -> None:
    docs = list(yaml.safe_load_all(proc.file.read_text()))
    (sync,) = [d for d in docs if d["kind"] == "AirflowAssetSync"]
    sync["spec"]["replay"] = replay
    for target in sync["spec"]["targets"]:
        target["url"] = target_url.get(target["name"], target["url"])
    proc.file.write_text(yaml.safe_dump_all(docs))


def _replay_outcome(proc: SyncProcess, replay_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        replay = proc.state().get("replay") if proc.state_file.exists() else None
        if replay and replay["id"] == replay_id and replay["phase"] != "Running":
            return dict(replay)
        if time.monotonic() > deadline:
            raise AssertionError(f"replay {replay_id} not finished: {replay}\n{proc.log()[-3000:]}")
        time.sleep(0.5)


def _verify(proc: SyncProcess) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "airflow_asset_sync", "verify", "-f", str(proc.file), *WINDOW],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr + done.stdout
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _copy_ids(target: AirflowInstance, uris: list[str], origin: str) -> dict[int, list[int]]:
    """Source event id -> ids of the target's copies of it."""
    out: dict[int, list[int]] = {}
    with target.client() as client:
        for uri in uris:
            for event in target.events(uri, client):
                marker = event["extra"].get("airflow_asset_sync")
                if isinstance(marker, dict) and marker.get("origin") == origin:
                    out.setdefault(int(marker["event_id"]), []).append(int(event["id"]))
    return out


def test_replay_fills_a_day_of_history_once_and_refuses_bad_input(
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
) -> None:
    uris = assets.take(2)
    targets = {"v2": airflow2, "v3": airflow3b}
    now = datetime.now(UTC)
    day_ago = now - timedelta(hours=HOURS)
    created = []
    with airflow3.client() as client:
        for i in range(HOURS):
            event = airflow3.create_event(uris[i % 2], {"hour": i}, client)
            airflow3.backdate_event(int(event["id"]), day_ago + timedelta(hours=i, minutes=1))
            created.append(int(event["id"]))
    source_times = {int(e["id"]): e["timestamp"] for u in uris for e in airflow3.events(u)}
    assert min(source_times[i] for i in created) < _rfc3339(now - timedelta(hours=23))

    # The day reaches both targets through the live sync.
    manifests = sync_manifests(
        "replay",
        airflow3,
        list(targets.items()),
        include=uris,
        extra_spec={"startFrom": _rfc3339(now - timedelta(hours=25))},
    )
    proc = sync_runner(manifests)
    for target in targets.values():
        assert await_delivery(target, uris, airflow3.url, set(created)) == dict.fromkeys(created, 1)
    proc.stop()

    # Half of it lost in each target; newer events bury the copies that are left.
    missing = created[1::2]
    for target in targets.values():
        copies = _copy_ids(target, uris, airflow3.url)
        for event_id in missing:
            (copy,) = copies[event_id]
            target.delete_event(copy)
        with target.client() as client:
            for n in range(FILLER):
                target.create_event(uris[0], {"filler": n}, client)
        counts = marker_counts(target, uris, airflow3.url)
        assert set(counts) == set(created) - set(missing)
    before = _verify(proc)
    assert before["ok"] is False

    # The replay: afterwards every event is there once, in both targets.
    replay_from = _rfc3339(now - timedelta(hours=25))
    _set_replay(proc, {"id": "after-incident-1", "from": replay_from})
    proc.start()
    outcome = _replay_outcome(proc, "after-incident-1")
    assert outcome["phase"] == "Succeeded", outcome
    # Read: every source event of the window, other tests' assets included (the source is
    # shared); published: the ones the filter lets through.
    assert outcome["eventsRead"] >= HOURS and outcome["eventsPublished"] == HOURS, outcome
    assert outcome["from"] == replay_from and outcome["startedAt"] and outcome["finishedAt"]
    for target in targets.values():
        assert marker_counts(target, uris, airflow3.url) == Counter(dict.fromkeys(created, 1))
    report = _verify(proc)
    assert report["ok"] is True, report
    for t in report["targets"]:
        assert sum(a["expected"] for a in t["assets"]) == HOURS
        assert sum(a["delivered"] for a in t["assets"]) == HOURS
        assert all(not a["missing"] and not a["duplicated"] for a in t["assets"])
    rows = {(name, u): len(t.events(u)) for name, t in targets.items() for u in uris}

    # The same id again (the spec applied again): nothing is read again.
    proc.stop()
    proc.start()
    time.sleep(5)
    assert proc.state()["replay"] == outcome
    assert proc.log().count("replay started") == 1

    # A new id re-reads the window and writes nothing.
    proc.stop()
    _set_replay(proc, {"id": "after-incident-2", "from": replay_from})
    proc.start()
    again = _replay_outcome(proc, "after-incident-2")
    assert again["phase"] == "Succeeded" and again["eventsPublished"] == HOURS, again
    assert {(name, u): len(t.events(u)) for name, t in targets.items() for u in uris} == rows

    # Bad input: a `from` in the future fails, naming the field; nothing is written.
    instances = {"source": airflow3, **targets}
    events_before = {(n, u): len(i.events(u)) for n, i in instances.items() for u in uris}
    proc.stop()
    future = _rfc3339(now + timedelta(hours=1))
    _set_replay(proc, {"id": "too-early", "from": future})
    proc.start()
    refused = _replay_outcome(proc, "too-early")
    assert refused["phase"] == "Failed", refused
    assert refused["message"].startswith(f"spec.replay.from {future[:-1]}"), refused
    assert "is in the future" in refused["message"]
    assert refused["eventsPublished"] == 0

    # A target that is down: named, and nothing written anywhere.
    proc.stop()
    down = f"http://127.0.0.1:{free_port()}"
    _set_replay(proc, {"id": "target-down", "from": replay_from}, v3=down)
    proc.start()
    failed = _replay_outcome(proc, "target-down", timeout_s=180)
    assert failed["phase"] == "Failed", failed
    assert "target v3 cannot be reached" in failed["message"], failed
    assert "set a new spec.replay.id to retry" in failed["message"]
    assert failed["eventsRead"] == 0 and failed["eventsPublished"] == 0
    assert airflow3.password not in json.dumps(proc.state()) + proc.log()
    proc.stop()
    after = {(n, u): len(i.events(u)) for n, i in instances.items() for u in uris}
    assert after == events_before
