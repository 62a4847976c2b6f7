"""Chains, hubs and rings of syncs against real Airflow 2.11 / 3.3 (issue 14).

Every sync is the product run as a user runs it (`airflow-asset-sync run -f sync.yaml`,
`rig.sync`). The truth is what each instance's API lists: every event of the test's asset,
counted by its origin event (a native event is its own origin; a copy names its origin in
its marker). "Settled" is awaited on the pollers' own counters: a copy is dropped by the
last poller on its way only once it has reached every instance before it, so once every
poller has dropped what it must, nothing is in flight; a loop would keep those counters
from ever matching (or push the copies past one per instance).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from airflow_asset_sync.worker.redelivery import COMMIT_BATCH
from rig.airflow import AirflowInstance, AssetPool
from rig.sync import MARKER, SyncProcess, sync_manifests

pytestmark = [pytest.mark.rig, pytest.mark.slow]

Origin = tuple[str, int]
#: Events created in each instance of a topology.
N = 3


def _await(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def holdings(instance: AirflowInstance, uri: str) -> Counter[Origin]:
    """Every event of `uri` in `instance`, by origin event (origin instance url, its id)."""
    counts: Counter[Origin] = Counter()
    for event in instance.events(uri):
        marker = event["extra"].get(MARKER)
        if isinstance(marker, dict):
            counts[(marker["origin"], int(marker["event_id"]))] += 1
        else:
            counts[(instance.url, int(event["id"]))] += 1
    return counts


def paths(instance: AirflowInstance, uri: str) -> dict[Origin, Any]:
    """The marker path of every copy of `uri` in `instance`, by origin event."""
    out: dict[Origin, Any] = {}
    for event in instance.events(uri):
        marker = event["extra"].get(MARKER)
        if isinstance(marker, dict):
            out[(marker["origin"], int(marker["event_id"]))] = marker.get("path")
    return out


def create(instances: Sequence[AirflowInstance], uri: str) -> set[Origin]:
    """`N` events of `uri` in each instance; their origin keys."""
    created: set[Origin] = set()
    for instance in instances:
        for i in range(N):
            event = instance.create_event(uri, {"born_in": instance.url, "n": i})
            created.add((instance.url, int(event["id"])))
    return created


def forwarding(proc: SyncProcess, decision: str) -> float:
    return proc.metric("aas_copies_forwarding_total", decision=decision)


def await_metric(proc: SyncProcess, name: str, at_least: float, what: str, **labels: str) -> None:
    _await(lambda: proc.metric(name, **labels) >= at_least, what)


def run_sync(
    sync_runner: Any,
    name: str,
    source: AirflowInstance,
    targets: Sequence[tuple[str, AirflowInstance]],
    uri: str,
    **kw: Any,
) -> SyncProcess:
    proc: SyncProcess = sync_runner(sync_manifests(name, source, targets, include=[uri], **kw))
    return proc


def test_a_chain_across_versions_reaches_the_end_once(
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: Any,
    kafka_topic: str,
    sync_runner: Any,
) -> None:
    """A (3.3) -> B (2.11) -> C (3.3), through Kafka: B's copies go on to C, once each, with
    the origin's id and the path (A, B); B's own events reach C too."""
    a, b, c = airflow3, airflow2, airflow3b
    (uri,) = assets.take(1)
    run_sync(
        sync_runner, "a-to-b", a, [("b", b)], uri, kafka=kafka.bootstrap, topic=kafka_topic + "-ab"
    )
    b_to_c = run_sync(
        sync_runner, "b-to-c", b, [("c", c)], uri, kafka=kafka.bootstrap, topic=kafka_topic + "-bc"
    )

    from_a = create([a], uri)
    from_b = create([b], uri)

    _await(lambda: set(from_a | from_b) <= set(holdings(c, uri)), "A's and B's events in C")
    _await(lambda: forwarding(b_to_c, "forwarded") >= N, "b-to-c to count its forwards")
    assert holdings(c, uri) == dict.fromkeys(from_a | from_b, 1)
    assert holdings(b, uri) == dict.fromkeys(from_a | from_b, 1)
    in_c = paths(c, uri)
    assert all(in_c[o] == [a.url, b.url] for o in from_a)
    assert all(in_c[o] == [b.url] for o in from_b)
    assert forwarding(b_to_c, "forwarded") == N
    # A's extra travelled both hops.
    extras = {e["extra"].get("born_in") for e in c.events(uri)}
    assert extras == {a.url, b.url}


def test_a_hub_fans_out_to_three_spokes_and_back(
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    airflow3b: AirflowInstance,
    airflow2b: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
) -> None:
    """Hub H (3.3) -> spokes (2.11, 3.3, 2.11) as one sync with three targets, and each spoke
    -> H: an event born in a spoke reaches H and the other two spokes, never back to its own
    spoke (that target is on its path: decided per target in one sync)."""
    hub, spokes = airflow3, [airflow2, airflow3b, airflow2b]
    (uri,) = assets.take(1)
    names = ["s1", "s2", "s3"]
    out = run_sync(sync_runner, "hub-out", hub, list(zip(names, spokes, strict=True)), uri)
    ins = [
        run_sync(sync_runner, f"{name}-in", spoke, [("hub", hub)], uri)
        for name, spoke in zip(names, spokes, strict=True)
    ]

    created = create([hub, *spokes], uri)

    # Each spoke's way in drops the hub's own events and the other spokes' (all have H on
    # their path): 3N each. The hub's way out forwards every spoke's events (3N) and drops,
    # per target, each spoke's own (N per target).
    for proc in ins:
        await_metric(
            proc, "aas_copies_forwarding_total", 3 * N, "every spoke to drop", decision="path"
        )
    _await(lambda: forwarding(out, "forwarded") >= 3 * N, "the hub to forward spokes' events")
    for name in names:
        await_metric(
            out,
            "aas_events_skipped_total",
            N,
            f"the hub's replayer of {name} to skip its own events",
            target=name,
            reason="on_path",
        )
    for instance in [hub, *spokes]:
        assert holdings(instance, uri) == dict.fromkeys(created, 1), instance.url
    assert forwarding(out, "forwarded") == 3 * N
    assert all(forwarding(p, "path") == 3 * N and forwarding(p, "forwarded") == 0 for p in ins)


def test_a_ring_of_three_reaches_everyone_once_and_never_loops(
    airflow2: AirflowInstance,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
) -> None:
    """A (2.11) -> B (3.3) -> C (3.3) -> A: each event goes two hops and the third poller
    drops it (its target is the origin)."""
    ring = [airflow2, airflow3, airflow3b]
    (uri,) = assets.take(1)
    procs = [
        run_sync(sync_runner, f"ring-{i}", ring[i], [("next", ring[(i + 1) % 3])], uri)
        for i in range(3)
    ]

    created = create(ring, uri)

    # Each poller forwards its predecessor's events (N) and drops the ones coming back to
    # the instance where they were born (N).
    for proc in procs:
        await_metric(proc, "aas_copies_forwarding_total", N, "the ring closed", decision="path")
        await_metric(proc, "aas_copies_forwarding_total", N, "forwards", decision="forwarded")
    for instance in ring:
        assert holdings(instance, uri) == dict.fromkeys(created, 1), instance.url
    for proc in procs:
        assert (forwarding(proc, "forwarded"), forwarding(proc, "path")) == (N, N)
        assert proc.metric("aas_events_published_total") == 2 * N


def test_an_event_reaching_an_instance_by_two_paths_lands_once(
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
) -> None:
    """A -> C directly and A -> B -> C: C keeps one copy per origin event.

    B -> C is first taken past its restart window (its first `commit_batch` deliveries are
    checked against C anyway) with events of B's own, so what is tested is the steady state:
    a forwarded delivery is checked against C every time. A -> B starts once the direct
    copies are in C (from a time before the events), so the second path surely comes second.
    """
    a, b, c = airflow3, airflow2, airflow3b
    uri, warm = assets.take(2)
    b_to_c: SyncProcess = sync_runner(
        sync_manifests("b-to-c", b, [("c", c)], include=[uri, warm]), name="b-to-c"
    )
    run_sync(sync_runner, "a-to-c", a, [("c", c)], uri)
    with b.client() as client:
        for i in range(COMMIT_BATCH):
            b.create_event(warm, {"warm": i}, client)
    _await(
        lambda: b_to_c.metric("aas_events_replayed_total", target="c") >= COMMIT_BATCH,
        "b-to-c past its restart window",
    )
    before = datetime.now().astimezone() - timedelta(seconds=1)

    created = create([a], uri)
    _await(lambda: set(created) <= set(holdings(c, uri)), "the direct copies in C")
    run_sync(
        sync_runner, "a-to-b", a, [("b", b)], uri, extra_spec={"startFrom": before.isoformat()}
    )

    _await(
        lambda: b_to_c.metric("aas_events_other_path_total", target="c") >= N,
        "b-to-c to find every event already in C",
    )
    assert forwarding(b_to_c, "forwarded") == N
    assert holdings(c, uri) == dict.fromkeys(created, 1)
    assert b_to_c.metric("aas_events_replayed_total", target="c") == COMMIT_BATCH
