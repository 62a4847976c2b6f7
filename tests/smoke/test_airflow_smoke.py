"""Each real Airflow accepts a POSTed asset event, lists it, and schedules the consumer DAG."""

from __future__ import annotations

import pytest

from rig.airflow import CONSUMED, AirflowInstance

pytestmark = pytest.mark.rig


@pytest.mark.parametrize("which", ["airflow2", "airflow3"])
def test_posted_event_is_listed_and_triggers_consumer(
    which: str, request: pytest.FixtureRequest
) -> None:
    instance: AirflowInstance = request.getfixturevalue(which)
    uri, dag_id = CONSUMED[0], "consume_c0"
    before = len(instance.dag_runs(dag_id))

    created = instance.create_event(uri, {"smoke": which})

    listed = instance.events(uri)
    assert created["id"] in [e["id"] for e in listed]
    mine = next(e for e in listed if e["id"] == created["id"])
    assert mine["extra"]["smoke"] == which
    runs = instance.wait_for_runs(dag_id, before + 1)
    assert len(runs) == before + 1
