"""The rig components one bench run uses, started on first use and stopped when done.

Three Airflows (a 2.11 and two 3.3), one Kafka broker, and later a kube-apiserver: each is
started only when a selected section needs it, and released as soon as no later section
does, so the machine carries as little as possible while a figure is taken. Every process
is a rig `Server`, so `REGISTRY.stop_all()` in the bench's `finally` stops whatever is left.

Roles (fixed, so figures from different sections are comparable):

- `a2`  Airflow 2.11: source of the 2.11 -> 3.3 latency run and of the naive poller;
- `a3s` Airflow 3.3: source of the 3.3 -> 3.3 runs, the backlog for catch-up, idle load;
- `a3t` Airflow 3.3: the target of everything (latency, raw ceiling, replay, naive).
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Any

from bench.common import log
from rig.airflow import AIRFLOW2, AIRFLOW3, AirflowInstance
from rig.cache import ROOT
from rig.kafka import KafkaBroker
from rig.kube import KubeRig
from rig.sync import SyncProcess, sync_manifests

ROLES = {"a2": AIRFLOW2, "a3s": AIRFLOW3, "a3t": AIRFLOW3}

#: Disjoint pool assets per use, so no two syncs ever forward each other's events.
POOL_BY_USE = {
    "lat-2to3": range(0, 10),
    "lat-3to3": range(10, 20),
    "variant": range(20, 30),
    "backlog": range(30, 50),
    "naive": range(50, 52),
    "parking": range(52, 62),
    "push-2to3": range(62, 66),
    "push-3to3": range(66, 70),
    "delivery": range(70, 73),
}


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._airflows: dict[str, AirflowInstance] = {}
        self._kafka: KafkaBroker | None = None
        self._kube: KubeRig | None = None

    # -- Airflow ---------------------------------------------------------------------------

    def airflows(self, *roles: str) -> list[AirflowInstance]:
        """Start the named instances (in parallel: their start-up is mostly waiting)."""
        missing = [r for r in roles if r not in self._airflows]
        errors: list[BaseException] = []

        def start(role: str) -> None:
            instance = AirflowInstance(version=ROLES[role], home=self.workdir / role)
            try:
                instance.start()
            except BaseException as exc:
                errors.append(exc)
                instance.stop()
                return
            self._airflows[role] = instance

        threads = [threading.Thread(target=start, args=(r,), name=f"start-{r}") for r in missing]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return [self._airflows[r] for r in roles]

    def airflow(self, role: str) -> AirflowInstance:
        return self.airflows(role)[0]

    def release(self, *roles: str) -> None:
        for role in roles:
            instance = self._airflows.pop(role, None)
            if instance is not None:
                log(f"stopping {role} (no later section needs it)")
                instance.stop()

    # -- Kafka, kube -----------------------------------------------------------------------

    @property
    def kafka(self) -> KafkaBroker:
        if self._kafka is None:
            broker = KafkaBroker(self.workdir / "kafka")
            broker.start()
            self._kafka = broker
        return self._kafka

    @property
    def kube(self) -> KubeRig:
        if self._kube is None:
            rig = KubeRig(workdir=self.workdir / "kube")
            rig.start()
            self._kube = rig
        return self._kube

    def release_kafka(self) -> None:
        if self._kafka is not None:
            self._kafka.stop()
            self._kafka = None

    # -- syncs -----------------------------------------------------------------------------

    def manifests(
        self,
        name: str,
        source: AirflowInstance,
        targets: list[tuple[str, AirflowInstance]],
        *,
        include: list[str],
        poll_interval: str | None = None,
        start_from: str = "latest",
        kafka: bool = True,
    ) -> list[dict[str, Any]]:
        """A user's YAML at the product's defaults: only what must be said is said.

        `rig.sync.sync_manifests` writes ``pollInterval: 250ms`` for fast tests; the bench
        removes it, so the worker runs at the default unless a variant sets one.
        """
        docs = sync_manifests(
            name,
            source,
            targets,
            include=include,
            kafka=self.kafka.bootstrap if kafka else None,
        )
        spec = docs[-1]["spec"]
        spec.pop("pollInterval", None)
        if poll_interval is not None:
            spec["pollInterval"] = poll_interval
        spec["startFrom"] = start_from
        return docs

    def sync_process(
        self,
        name: str,
        manifests: list[dict[str, Any]],
        *,
        prototype: dict[str, str] | None = None,
    ) -> SyncProcess:
        """A `run -f` worker (not started). With `prototype` (env switches), it runs
        `bench.prototype` instead of `airflow_asset_sync`, with the same arguments."""
        proc = SyncProcess(self.workdir / "syncs" / f"{name}-{secrets.token_hex(2)}", manifests)
        if prototype is not None:
            argv = proc.server.argv
            proc.server.argv = [sys.executable, "-m", "bench.prototype", *argv[3:]]
            proc.server.env = dict(
                os.environ,
                PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("operator", "tools", "tests")),
                **prototype,
            )
        return proc


def pool(use: str) -> list[str]:
    from rig.airflow import POOL

    return [POOL[i] for i in POOL_BY_USE[use]]
