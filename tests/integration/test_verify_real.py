"""`airflow-asset-sync verify` against real Airflow instances.

A sync delivers events from Airflow 3.3 to Airflow 2.11 and to another 3.3 (`run -f`). Then
`verify` is run as a user would, on the same file: all there (exit 0); one copy deleted from
a target's database, as a lost write would (exit 1, that id missing, in that target only); a
second copy of an event written by hand (a duplicate, named); `--repair --dry-run` (nothing
written), `--repair` (the lost copy written back once; run again, nothing to write); bad
windows and a target that is down (exit 2, a clear line, nothing written anywhere).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rig.airflow import AirflowInstance, AssetPool
from rig.cache import ROOT
from rig.procs import free_port
from rig.sync import MARKER, await_delivery, sync_manifests

pytestmark = [pytest.mark.rig, pytest.mark.slow]


def _verify(file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_asset_sync", "verify", "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
        check=False,
    )


def _by_target(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: {a["sourceUri"]: a for a in t["assets"]} for t in report["targets"]}


def _copies(target: AirflowInstance, uris: list[str]) -> dict[int, list[dict[str, Any]]]:
    """Source event id -> the target's events that are copies of it."""
    out: dict[int, list[dict[str, Any]]] = {}
    for uri in uris:
        for event in target.events(uri):
            marker = event["extra"].get(MARKER)
            if isinstance(marker, dict):
                out.setdefault(int(marker["event_id"]), []).append(event)
    return out


def test_verify_finds_a_lost_and_a_duplicated_copy_and_refuses_bad_input(
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
    tmp_path: Path,
) -> None:
    uris = assets.take(2)
    manifests = sync_manifests(
        "verify", airflow3, [("v2", airflow2), ("v3", airflow3b)], include=uris
    )
    proc = sync_runner(manifests)
    created = {airflow3.create_event(uris[i % 2], {"n": i})["id"] for i in range(6)}
    for target in (airflow2, airflow3b):
        assert await_delivery(target, uris, airflow3.url, created) == dict.fromkeys(created, 1)
    proc.stop()
    file = proc.file

    done = _verify(file, "--since", "10m", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["ok"] is True
    for name in ("v2", "v3"):
        assert sum(a["expected"] for a in _by_target(report)[name].values()) == 6
        assert sum(a["delivered"] for a in _by_target(report)[name].values()) == 6

    # A copy lost from the 2.11 target's database.
    lost = min(created)
    (copy,) = _copies(airflow2, uris)[lost]
    airflow2.delete_event(int(copy["id"]))
    # A second copy of another event in the 3.3 target, as a replay without dedup would write.
    twice = max(created)
    (original,) = _copies(airflow3b, uris)[twice]
    airflow3b.create_event(original["uri"], dict(original["extra"]))

    found = _verify(file, "--since", "10m", "--json")
    assert found.returncode == 1, found.stderr + found.stdout
    report = json.loads(found.stdout)
    assert report["ok"] is False
    v2, v3 = _by_target(report)["v2"], _by_target(report)["v3"]
    assert [i for a in v2.values() for i in a["missing"]] == [lost]
    assert all(not a["duplicated"] for a in v2.values())
    assert [a["duplicated"] for a in v3.values() if a["duplicated"]] == [{str(twice): 2}]
    assert all(not a["missing"] for a in v3.values())
    table = _verify(file, "--since", "10m")
    assert table.returncode == 1
    assert f"missing ids {lost}" in table.stdout and f"duplicated ids {twice}" in table.stdout

    # Repair: a dry run writes nothing; then the lost copy is written back, once, and the
    # second verdict is still 1 (a duplicate cannot be undone: no Airflow API deletes events).
    dry = _verify(file, "--since", "10m", "--repair", "--dry-run")
    assert dry.returncode == 1, dry.stderr + dry.stdout
    assert "repair: 1 events to write" in dry.stdout and "dry run, nothing written" in dry.stdout
    assert lost not in _copies(airflow2, uris)
    fixed = _verify(file, "--since", "10m", "--repair", "--json")
    assert fixed.returncode == 1, fixed.stderr + fixed.stdout
    outcome = json.loads(fixed.stdout)
    assert outcome["repair"] == {"dryRun": False, "planned": 1, "written": 1}
    assert outcome["after"]["targets"][0]["ok"] is True  # v2: nothing missing any more
    assert len(_copies(airflow2, uris)[lost]) == 1
    again = _verify(file, "--since", "10m", "--repair", "--json")
    assert json.loads(again.stdout)["repair"]["planned"] == 0  # never written twice

    # Bad input: a clear line naming the flag, exit 2.
    future = _verify(file, "--since", "2099-01-01T00:00:00Z")
    assert future.returncode == 2 and "--since '2099-01-01T00:00:00Z' is not in the past" in (
        future.stderr
    )
    backwards = _verify(file, "--since", "1h", "--until", "2h")
    assert backwards.returncode == 2 and "--until '2h' is not after --since '1h'" in (
        backwards.stderr
    )

    # A target that is down: it is named, and nothing is written anywhere.
    instances = (airflow3, airflow2, airflow3b)
    events_before = {(t.url, u): len(t.events(u)) for t in instances for u in uris}
    docs = list(yaml.safe_load_all(file.read_text()))
    (sync,) = [d for d in docs if d["kind"] == "AirflowAssetSync"]
    sync["spec"]["targets"][1]["url"] = f"http://127.0.0.1:{free_port()}"
    down_file = tmp_path / "down.yaml"
    down_file.write_text(yaml.safe_dump_all(docs))
    down = _verify(down_file, "--since", "10m")
    assert down.returncode == 2, down.stderr + down.stdout
    assert "cannot verify: target v3 (http://127.0.0.1:" in down.stderr
    assert "Traceback" not in down.stderr
    assert airflow3.password not in down.stderr + down.stdout
    assert {(t.url, u): len(t.events(u)) for t in instances for u in uris} == events_before
