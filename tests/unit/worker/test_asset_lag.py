"""`aas_asset_lag_seconds`: the per-asset lag, bounded to the top `ASSET_LAG_TOP` assets."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from airflow_asset_sync.api.events import Envelope, SourceEvent
from airflow_asset_sync.api.spec import Target
from airflow_asset_sync.api.status import TargetStatus
from airflow_asset_sync.worker.metrics import ASSET_LAG_TOP, AssetLag, WorkerMetrics
from airflow_asset_sync.worker.replayer import Replayer

from .fakes import T0, FakeAirflow, FakeClock, ListSubscription, deliveries, envelope

NAME = "aas_asset_lag_seconds"


def event(event_id: int, uri: str, *, age_s: float, now: datetime) -> Envelope:
    return envelope(SourceEvent(id=event_id, uri=uri, timestamp=now - timedelta(seconds=age_s)))


def shown(metrics: WorkerMetrics, target: str = "t") -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name != NAME:
            continue
        for sample in family.samples:
            if sample.labels["target"] == target:
                out[sample.labels["asset"]] = sample.value
    return out


def key(env: Envelope) -> tuple[str, int, str]:
    return env.marker().key


def test_oldest_pending_per_asset_then_frozen_then_cleared_when_idle() -> None:
    metrics = WorkerMetrics()
    lag = AssetLag(metrics, target="t")
    now = T0
    a1, a2, b1 = (
        event(1, "s3://a", age_s=30, now=now),
        event(2, "s3://a", age_s=20, now=now),
        event(3, "s3://b", age_s=5, now=now),
    )
    for env in (a1, a2, b1):
        lag.pending(env, env.event.uri)
    pending = {key(a1), key(a2), key(b1)}

    lag.update(pending, now, idle=False)
    assert shown(metrics) == {"s3://a": 30.0, "s3://b": 5.0}

    # a1 done: a is measured by a1 once more (the event just done), then by a2.
    pending.discard(key(a1))
    lag.update(pending, now + timedelta(seconds=1), idle=False)
    assert shown(metrics) == {"s3://a": 31.0, "s3://b": 6.0}
    lag.update(pending, now + timedelta(seconds=2), idle=False)
    assert shown(metrics)["s3://a"] == 22.0

    # Everything of a done: a keeps its last value while b's pending delivery ages.
    pending.discard(key(a2))
    lag.update(pending, now + timedelta(seconds=3), idle=False)
    lag.update(pending, now + timedelta(seconds=10), idle=False)
    assert shown(metrics) == {"s3://a": 23.0, "s3://b": 15.0}

    lag.update(set(), now + timedelta(seconds=11), idle=True)
    assert shown(metrics) == {}


def test_a_new_batch_starts_afresh() -> None:
    metrics = WorkerMetrics()
    lag = AssetLag(metrics, target="t")
    first = event(1, "s3://a", age_s=60, now=T0)
    lag.pending(first, "s3://a")
    lag.update(set(), T0, idle=False)  # single delivery, done: its lag is shown
    assert shown(metrics) == {"s3://a": 60.0}
    second = event(2, "s3://b", age_s=1, now=T0)
    lag.pending(second, "s3://b")
    lag.update({key(second)}, T0, idle=False)
    assert shown(metrics) == {"s3://b": 1.0}


def test_only_the_top_n_are_exported_and_leavers_are_removed() -> None:
    metrics = WorkerMetrics()
    lag = AssetLag(metrics, target="t")
    envs = [event(i, f"s3://x/{i:02d}", age_s=i, now=T0) for i in range(1, 26)]
    for env in envs:
        lag.pending(env, env.event.uri)
    pending = {key(e) for e in envs}
    lag.update(pending, T0, idle=False)
    top = shown(metrics)
    assert len(top) == ASSET_LAG_TOP == 10
    assert set(top) == {f"s3://x/{i:02d}" for i in range(16, 26)}

    # The laggiest fifteen finish; their series stay (values frozen) but the other assets'
    # pending deliveries age past them: the frozen ones drop out of the top and are removed.
    for env in envs[10:]:
        pending.discard(key(env))
    lag.update(pending, T0, idle=False)  # done just now: counted once more
    lag.update(pending, T0 + timedelta(seconds=100), idle=False)
    assert set(shown(metrics)) == {f"s3://x/{i:02d}" for i in range(1, 11)}
    assert shown(metrics)["s3://x/10"] == 110.0
    assert len(shown(metrics)) == ASSET_LAG_TOP


def test_targets_are_independent() -> None:
    metrics = WorkerMetrics()
    one, two = AssetLag(metrics, target="one"), AssetLag(metrics, target="two")
    env = event(1, "s3://a", age_s=3, now=T0)
    one.pending(env, "s3://a")
    two.pending(env, "s3://a-mapped")
    one.update({key(env)}, T0, idle=False)
    two.update({key(env)}, T0, idle=False)
    two.update(set(), T0, idle=True)
    assert shown(metrics, "one") == {"s3://a": 3.0}
    assert shown(metrics, "two") == {}


async def test_the_replayer_feeds_it_with_mapped_uris() -> None:
    server = FakeAirflow(api_version="v2")
    server.add_asset("s3://new/a")
    server.add_asset("s3://new/b")
    metrics = WorkerMetrics()
    clock = FakeClock(start=T0 + timedelta(minutes=1))
    replayer = Replayer(
        target=Target.model_validate(
            {
                "name": "t",
                "url": "http://target:8080",
                "rewrite": [{"match": "^s3://old/", "replace": "s3://new/"}],
            }
        ),
        client=server.client(),
        subscription=ListSubscription(),
        status=TargetStatus(name="t"),
        clock=clock,
        metrics=metrics,
    )
    batch = [
        envelope(SourceEvent(id=1, uri="s3://old/a", timestamp=T0 + timedelta(seconds=5))),
        envelope(SourceEvent(id=2, uri="s3://old/b", timestamp=T0 + timedelta(seconds=20))),
    ]
    await replayer.replay(deliveries(batch), asyncio.Event())
    assert shown(metrics) == {"s3://new/a": pytest.approx(55.0), "s3://new/b": 40.0}
    assert metrics.value("aas_lag_seconds", {"target": "t"}) == 40.0
