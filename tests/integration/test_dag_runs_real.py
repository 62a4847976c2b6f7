"""`spec.dagRuns` on the real rig: finished source DAG runs (and a task) as target asset events.

Airflow 2.11 -> 3.3 and 3.3 -> 2.11, through `airflow-asset-sync run -f` and a real Kafka
broker. A producer DAG is deployed in the source and triggered through its API with a
``conf``; the source's own scheduler runs it to success. In the target, two consumer DAGs
are scheduled on the assets the completions are published under (one for the run, one for
its task ``work``), which is also what creates those assets there.

Checked from outside (the target's API, the state file): each finished run lands in the
target exactly once per selector, with the source's run_id, logical_date, conf and state in
its ``extra``; the target's scheduler creates consumer runs; and through two SIGKILLs of the
worker (one in steady state, after which runs finish during the outage; one as soon as the
restarted worker is ready, while it reads and publishes them) no completion is lost or
written twice. The cursor position is in status.source.runs.
"""

from __future__ import annotations

import secrets
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import pytest

from rig.airflow import AirflowInstance
from rig.sync import MARKER, SyncProcess, marker_counts, sync_manifests
from support.live import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.slow]

PAIRS = pytest.mark.parametrize(
    ("source_name", "target_name"),
    [("airflow2", "airflow3"), ("airflow3", "airflow2")],
    ids=["2.11-to-3.3", "3.3-to-2.11"],
)

PRODUCER = '''
"""A producer DAG written by test_dag_runs_real (airflow-asset-sync rig, generated)."""
from datetime import datetime

try:  # Airflow 3.x
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.operators.empty import EmptyOperator

with DAG({dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    EmptyOperator(task_id="work")
'''


def _prefix(instance: AirflowInstance) -> str:
    return "/api/v1" if instance.major == 2 else "/api/v2"


def _deploy_producer(source: AirflowInstance, dag_id: str) -> None:
    source.add_dag(dag_id, PRODUCER.format(dag_id=dag_id))
    with source.client() as c:
        wait_for(
            lambda: c.get(f"{_prefix(source)}/dags/{dag_id}").status_code == 200 or None,
            what=f"{dag_id} in {source.url}",
            timeout_s=60,
        )
        r = c.patch(f"{_prefix(source)}/dags/{dag_id}", json={"is_paused": False})
        r.raise_for_status()


def _trigger(source: AirflowInstance, dag_id: str, n: int) -> dict[str, Any]:
    """POST a run with a conf naming it; returns the run as the source created it."""
    body: dict[str, Any] = {"conf": {"n": n, "batch": f"b{n}"}}
    if source.major == 3:
        body["logical_date"] = datetime.now(UTC).isoformat()
    with source.client() as c:
        r = c.post(f"{_prefix(source)}/dags/{dag_id}/dagRuns", json=body)
        r.raise_for_status()
        run: dict[str, Any] = r.json()
    return run


def _finished(source: AirflowInstance, dag_id: str, run_ids: list[str]) -> dict[str, Any]:
    """Wait until the source's scheduler has finished every run; returns them by run_id."""

    def probe() -> dict[str, Any] | None:
        runs = {r["dag_run_id"]: r for r in source.dag_runs(dag_id)}
        if all(runs.get(i, {}).get("state") == "success" for i in run_ids):
            return {i: runs[i] for i in run_ids}
        return None

    found: dict[str, Any] = wait_for(probe, what=f"{dag_id} runs to succeed", timeout_s=180)
    return found


def _completion_events(target: AirflowInstance, uri: str, origin: str) -> list[dict[str, Any]]:
    return [
        e
        for e in target.events(uri)
        if isinstance(e["extra"].get(MARKER), dict) and e["extra"][MARKER]["origin"] == origin
    ]


def _restart_and_kill_at_once(proc: SyncProcess) -> None:
    """Start the worker again and SIGKILL it as soon as it is ready: in the middle of its
    first reads and publishes (the start-up kills of tests/reliability)."""
    proc.server.start()
    proc.server.wait_ready(proc.ready, timeout_s=120, what="ready after a kill")
    proc.kill()


@PAIRS
def test_finished_runs_reach_the_target_once_each_through_worker_kills(
    source_name: str,
    target_name: str,
    kafka: Any,
    kafka_topic: str,
    sync_runner: Any,
    request: pytest.FixtureRequest,
) -> None:
    source: AirflowInstance = request.getfixturevalue(source_name)
    target: AirflowInstance = request.getfixturevalue(target_name)
    tag = secrets.token_hex(3)
    instance, dag_id = f"legacy-{tag}", f"aas_runs_{tag}"
    run_uri = f"x-dagrun://{instance}/{dag_id}"
    task_uri = f"x-dagrun://{instance}/{dag_id}/work"
    _deploy_producer(source, dag_id)
    run_consumer = target.add_consumer([run_uri])
    task_consumer = target.add_consumer([task_uri])

    manifests = sync_manifests(
        f"runs-{tag}",
        source,
        [("t", target)],
        include=["s3://aas-test/none-of-these/*"],  # asset events are not what is tested here
        kafka=kafka.bootstrap,
        topic=kafka_topic,
        extra_spec={
            "dagRuns": [
                {"dagId": "aas_runs_*", "asset": "x-dagrun://{instance}/{dag_id}"},
                {
                    "dagId": dag_id,
                    "taskId": "work",
                    "states": ["success", "failed"],
                    "asset": "x-dagrun://{instance}/{dag_id}/{task_id}",
                },
            ]
        },
    )
    manifests[-1]["spec"]["source"]["instanceId"] = instance
    proc: SyncProcess = sync_runner(manifests)
    # startFrom latest: the cursor is placed before any run exists, so all of them are new.
    wait_for(
        lambda: (proc.state()["source"].get("runs") or {}).get("checkpoint", {}).get("initialized"),
        what="the completions cursor to be placed",
        timeout_s=60,
    )

    # 1. Two runs while the worker runs: both arrive, with the run in extra.
    first = [_trigger(source, dag_id, n)["dag_run_id"] for n in (1, 2)]
    runs = _finished(source, dag_id, first)
    wait_for(
        lambda: len(_completion_events(target, run_uri, instance)) >= 2 or None,
        what="the first two completions in the target",
        timeout_s=120,
    )

    # 2. SIGKILL; two more runs finish while the worker is down; restart and kill again as
    #    soon as it is ready, while it reads and publishes them (it may or may not have
    #    published or checkpointed: every case must end in one copy); then start for good.
    proc.kill()
    later = [_trigger(source, dag_id, n)["dag_run_id"] for n in (3, 4)]
    runs.update(_finished(source, dag_id, later))
    _restart_and_kill_at_once(proc)
    proc.server.start()
    proc.server.wait_ready(proc.ready, timeout_s=120, what="ready after the last kill")

    all_ids = first + later
    wanted = len(all_ids)

    def delivered() -> list[dict[str, Any]] | None:
        found = _completion_events(target, run_uri, instance)
        tasks = _completion_events(target, task_uri, instance)
        return found if len(found) >= wanted and len(tasks) >= wanted else None

    wait_for(delivered, what=f"{wanted} completions of each kind in the target", timeout_s=180)
    # Let the worker go through more polls of the same window, then stop it cleanly: no
    # late duplicate may appear (the overlap window re-reads the last runs every poll).
    polls = proc.state()["source"]["runs"]["lastPollTime"]
    wait_for(
        lambda: proc.state()["source"]["runs"]["lastPollTime"] != polls or None,
        what="another read of finished runs",
        timeout_s=60,
    )
    proc.stop()

    for uri, task in ((run_uri, False), (task_uri, True)):
        events = _completion_events(target, uri, instance)
        by_run = {e["extra"]["run_id"]: e for e in events}
        assert sorted(by_run) == sorted(all_ids), (uri, [e["extra"]["run_id"] for e in events])
        assert len(events) == wanted, f"{uri}: {len(events)} events for {wanted} runs"
        ids = marker_counts(target, [uri], instance)
        assert all(i < 0 for i in ids), ids  # completion ids never meet asset event ids
        assert set(ids.values()) == {1}, ids
        for run_id, event in by_run.items():
            extra, source_run = event["extra"], runs[run_id]
            assert extra["dag_id"] == dag_id
            assert extra["state"] == "success"
            assert extra["conf"] == source_run["conf"]
            assert _same_time(extra["logical_date"], source_run["logical_date"])
            ended = _task_end(source, dag_id, run_id) if task else source_run["end_date"]
            assert _same_time(extra["end_date"], ended)
            assert extra["completion"] == ("task" if task else "dag_run")
            if task:
                assert extra["task_id"] == "work"
                assert extra["map_index"] == -1

    state = proc.state()["source"]["runs"]
    assert state["checkpoint"]["initialized"] is True
    assert state["published"] >= 1  # this last process's share; the counts above are the truth
    # The target's scheduler acts on them: its consumers ran.
    assert target.wait_for_runs(run_consumer, 1, timeout_s=120)
    assert target.wait_for_runs(task_consumer, 1, timeout_s=120)


def _task_end(source: AirflowInstance, dag_id: str, run_id: str) -> str:
    """The end time of the run's task ``work``, as the source reports it."""
    run = urllib.parse.quote(run_id, safe="")
    with source.client() as c:
        r = c.get(f"{_prefix(source)}/dags/{dag_id}/dagRuns/{run}/taskInstances/work")
        r.raise_for_status()
        return str(r.json()["end_date"])


def _same_time(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return datetime.fromisoformat(a.replace("Z", "+00:00")) == datetime.fromisoformat(
        b.replace("Z", "+00:00")
    )
