"""`controller.peering`: the resync thread stands by exactly when kopf would."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from airflow_asset_sync import controller
from airflow_asset_sync.controller import handlers
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.controller.peering import PeeringGate, outranked
from support.fake_kube import FakeKube

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _peer(priority: int, seen_ago_s: float, lifetime: int = 30) -> dict[str, Any]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - timedelta(seconds=seen_ago_s)).isoformat(),
    }


def test_a_live_higher_peer_outranks() -> None:
    peers = {"me@a": _peer(100, 1), "other@b": _peer(200, 5)}
    assert outranked(peers, priority=100, now=NOW) == ["other@b"]


@pytest.mark.parametrize(
    "other",
    [_peer(50, 1), _peer(200, 31), _peer(100, 1)],
    ids=["lower", "expired", "own-entry"],
)
def test_lower_expired_or_own_entries_do_not(other: dict[str, Any]) -> None:
    assert outranked({"x": other}, priority=100, now=NOW) == []


def test_garbage_entries_are_ignored() -> None:
    peers: dict[str, Any] = {"a": "junk", "b": {"priority": 500}, "c": {"lastseen": "no"}}
    assert outranked(peers, priority=1, now=NOW) == []


def test_gate_reads_every_peering_object_and_fails_closed() -> None:
    objects: dict[str | None, Mapping[str, Any] | None] = {
        "a": {"status": {"x": _peer(1, 1)}},
        "b": None,  # absent: nothing to defer to
    }
    gate = PeeringGate(
        read=objects.__getitem__, namespaces=["a", "b"], priority=10, now=lambda: NOW
    )
    assert gate() is True
    objects["b"] = {"status": {"y": _peer(20, 1)}}
    assert gate() is False

    def broken(_: str | None) -> Mapping[str, Any] | None:
        raise RuntimeError("API down")

    assert PeeringGate(read=broken, namespaces=[None], priority=1)() is False


class PeeringKube(FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.peering_reads: list[tuple[str | None, str]] = []

    def get_peering(self, *, namespace: str | None, name: str) -> Mapping[str, Any] | None:
        self.peering_reads.append((namespace, name))
        return None


def _runtime(monkeypatch: pytest.MonkeyPatch, kube: FakeKube, **kwargs: Any) -> handlers.Runtime:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: captured.update(kw))
    controller.run_operator(config=OperatorConfig(worker_image="w:1"), kube_api=kube, **kwargs)
    runtime = captured["memo"][handlers.MEMO_KEY]
    assert isinstance(runtime, handlers.Runtime)
    return runtime


def test_run_operator_gates_the_resync_on_the_peering_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = PeeringKube()
    runtime = _runtime(monkeypatch, kube, namespaces=["t1", "t2"], peering="aas", priority=3)
    assert runtime.active() is True
    assert kube.peering_reads == [("t1", "aas"), ("t2", "aas")]
    kube.peering_reads.clear()
    assert _runtime(monkeypatch, kube, peering="aas").active() is True
    assert kube.peering_reads == [(None, "aas")]  # the ClusterKopfPeering
    kube.peering_reads.clear()
    assert _runtime(monkeypatch, kube).active() is True
    assert kube.peering_reads == []  # standalone: nothing to ask
