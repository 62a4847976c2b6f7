"""Run the product itself as a real process: `airflow-asset-sync run -f sync.yaml`.

Tests drive the sync engine exactly as a user would, through the CLI and a YAML file, and
observe it only from outside: the Airflow APIs (truth), the state file, and /metrics.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rig.airflow import AirflowInstance
from rig.cache import ROOT
from rig.procs import Server, free_port

MARKER = "airflow_asset_sync"


def secret(name: str, instance: AirflowInstance) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"username": instance.username, "password": instance.password},
    }


def endpoint(instance: AirflowInstance, secret_name: str) -> dict[str, Any]:
    return {
        "url": instance.url,
        "apiVersion": instance.api_version,
        "auth": {instance.auth_kind: {"secretName": secret_name}},
    }


def sync_manifests(
    name: str,
    source: AirflowInstance,
    targets: Sequence[tuple[str, AirflowInstance]],
    *,
    include: Sequence[str] = (),
    kafka: str | None = None,
    topic: str | None = None,
    extra_spec: dict[str, Any] | None = None,
    target_options: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """An AirflowAssetSync with Secrets for every instance, as a user would write it."""
    docs = [secret(f"{name}-source", source)]
    target_specs = []
    for tname, instance in targets:
        docs.append(secret(f"{name}-{tname}", instance))
        target_specs.append(
            {
                "name": tname,
                **endpoint(instance, f"{name}-{tname}"),
                **(target_options or {}).get(tname, {}),
            }
        )
    spec: dict[str, Any] = {
        "source": endpoint(source, f"{name}-source"),
        "targets": target_specs,
        "startFrom": "latest",
        "pollInterval": "250ms",
    }
    if include:
        spec["assets"] = {"include": [{"glob": g} for g in include]}
    if kafka:
        spec["kafka"] = {"bootstrapServers": [kafka], **({"topic": topic} if topic else {})}
    spec.update(extra_spec or {})
    docs.append(
        {
            "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
            "kind": "AirflowAssetSync",
            "metadata": {"name": name, "namespace": "tests"},
            "spec": spec,
        }
    )
    return docs


class SyncProcess:
    """One `airflow-asset-sync run` process with its state file and metrics port."""

    def __init__(
        self, workdir: Path, manifests: list[dict[str, Any]], *, metrics_port: int | None = None
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.file = workdir / "sync.yaml"
        self.file.write_text(yaml.safe_dump_all(manifests))
        self.state_file = workdir / "offsets.json"
        #: Given when something must know it in advance (the listener plugin's poke URL).
        self.metrics_port = metrics_port or free_port()
        self.server = Server(
            f"sync {workdir.name}",
            [
                sys.executable,
                "-m",
                "airflow_asset_sync",
                "run",
                "-f",
                str(self.file),
                "--state",
                str(self.state_file),
                "--metrics-port",
                str(self.metrics_port),
            ],
            log_path=workdir / "sync.log",
            env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
        )

    def start(self) -> SyncProcess:
        self.server.start()
        self.server.wait_ready(self.ready, timeout_s=60, what="ready")
        return self

    def ready(self) -> bool:
        return (
            httpx.get(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2).status_code == 200
        )

    def kill(self) -> None:
        """SIGKILL: no chance to finish writes or checkpoint."""
        self.server.kill(signal.SIGKILL)
        assert self.server.proc is not None
        self.server.proc.wait(timeout=10)

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> SyncProcess:
        self.kill() if self.server.running else None
        return self.start()

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def metrics(self) -> dict[str, float]:
        """Prometheus text -> {'name{labels}': value} (only this process's samples)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of samples of `name` whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics().items():
            metric, _, rest = key.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def log(self) -> str:
        return (self.workdir / "sync.log").read_text(errors="replace")


def marker_counts(target: AirflowInstance, uris: Sequence[str], origin: str) -> Counter[int]:
    """How many times each source event id of `origin` landed in `target` (by marker;
    each id a coalesced copy lists counts)."""
    counts: Counter[int] = Counter()
    with target.client() as client:
        for uri in uris:
            for event in target.events(uri, client):
                marker = event["extra"].get(MARKER)
                if isinstance(marker, dict) and marker.get("origin") == origin:
                    # A coalesced copy (delivery coalesce) stands for every id it lists.
                    for event_id in marker.get("coalesced") or [marker["event_id"]]:
                        counts[int(event_id)] += 1
    return counts


def await_delivery(
    target: AirflowInstance,
    uris: Sequence[str],
    origin: str,
    ids: set[int],
    *,
    timeout_s: float = 90,
) -> Counter[int]:
    """Wait until every id in `ids` is in `target`; returns the final counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = marker_counts(target, uris, origin)
        missing = ids - set(counts)
        if not missing:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} of {len(ids)} events never arrived: {sorted(missing)[:10]}"
            )
        time.sleep(0.3)


@pytest.fixture
def sync_runner(tmp_path: Path) -> Iterator[Any]:
    """Start `run` processes for a test; all are stopped at its end."""
    started: list[SyncProcess] = []

    def start(manifests: list[dict[str, Any]], *, name: str = "sync") -> SyncProcess:
        proc = SyncProcess(tmp_path / f"{name}-{len(started)}", manifests)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
