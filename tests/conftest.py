"""Session fixtures of the real-component rig are plugins, so a test pays only for what it uses.

Two more plugins check every test: `support.tiers` (a test that starts a real component is
marked rig, so `make unit` starts nothing) and `support.pending_tasks` (an async test leaves
no asyncio task pending).

Tests that need the real cluster run last. Once started, the cluster (kubelet, controllers,
CoreDNS, the operator's and the workers' pods) keeps both cores busy and polls the shared
Airflow instances until the session ends; every test after its first user paid for that in
CI (a 19-minute suite became 70). Moving them to the end keeps the rest of the suite on a
quiet machine and changes nothing they assert.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "rig.kube",
    "rig.kafka",
    "rig.airflow",
    "rig.sync",
    "rig.cluster",
    # Checks on every test: rig fixtures only under the rig marker, no asyncio task left.
    "support.tiers",
    "support.pending_tasks",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stable sort: tests using the `cluster` fixture (directly or through another) go last."""
    items.sort(key=lambda item: "cluster" in getattr(item, "fixturenames", ()))
