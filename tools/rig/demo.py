"""`make demo`: asset events crossing from a real Airflow 2.11 to a real Airflow 3.3.

Starts both Airflows on loopback (provisioned into the cache on first use), writes the same
kind of YAML a user would `kubectl apply` (an AirflowAssetSync plus its Secrets), runs it
with `airflow-asset-sync run -f` (standalone mode: no Kubernetes, no Kafka), creates events
in Airflow 2, and shows each one arriving in Airflow 3 with its marker and the consumer DAG
run it caused there. Everything it started is stopped at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from rig.airflow import AIRFLOW2, AIRFLOW3, CONSUMED, AirflowInstance
from rig.cache import ROOT, log, phase
from rig.procs import REGISTRY, Server, free_port

EVENTS = 3


def sync_manifests(
    source: AirflowInstance, target: AirflowInstance, *, name: str = "demo"
) -> list[dict[str, object]]:
    """The AirflowAssetSync (2.x -> 3.x) and its two Secrets, as a user would write them."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "airflow2-creds"},
            "stringData": {"username": source.username, "password": source.password},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "airflow3-creds"},
            "stringData": {"username": target.username, "password": target.password},
        },
        {
            "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
            "kind": "AirflowAssetSync",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "source": {
                    "url": source.url,
                    "apiVersion": "auto",
                    "auth": {"basic": {"secretName": "airflow2-creds"}},
                },
                "targets": [
                    {
                        "name": "airflow3",
                        "url": target.url,
                        "auth": {"password": {"secretName": "airflow3-creds"}},
                    }
                ],
                "assets": {"include": [{"glob": "s3://aas-test/consumed/*"}]},
                "startFrom": "latest",
                "pollInterval": "500ms",
            },
        },
    ]


def main() -> None:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aas-demo-"))
    try:
        a2 = AirflowInstance(version=AIRFLOW2, home=workdir / "airflow2")
        a3 = AirflowInstance(version=AIRFLOW3, home=workdir / "airflow3")
        a2.start()
        a3.start()

        sync_file = workdir / "sync.yaml"
        sync_file.write_text(yaml.safe_dump_all(sync_manifests(a2, a3)))
        metrics_port = free_port()
        worker = Server(
            "airflow-asset-sync run",
            [
                sys.executable,
                "-m",
                "airflow_asset_sync",
                "run",
                "-f",
                str(sync_file),
                "--state",
                str(workdir / "offsets.json"),
                "--metrics-port",
                str(metrics_port),
            ],
            log_path=workdir / "worker.log",
            env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
        )
        with phase("demo: start the sync (airflow-asset-sync run -f sync.yaml)"):
            worker.start()
            worker.wait_ready(
                lambda: (
                    httpx.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2).status_code
                    == 200
                ),
                timeout_s=60,
                what="ready",
            )

        uri, dag_id = CONSUMED[1], "consume_c1"
        runs_before = len(a3.dag_runs(dag_id))
        print(
            f"\nSync: Airflow {AIRFLOW2} {a2.url}  -->  Airflow {AIRFLOW3} {a3.url}\n", flush=True
        )
        print(
            f"{'source event (2.11)':<24}{'target event (3.3)':<22}{'latency':>7}  marker",
            flush=True,
        )
        latencies = []
        with a2.client() as c2, a3.client() as c3:
            for i in range(EVENTS):
                t0 = time.monotonic()
                created = a2.create_event(uri, {"demo": i}, c2)
                arrived = _await_marker(a3, c3, uri, created["id"])
                latencies.append(time.monotonic() - t0)
                marker = arrived["extra"]["airflow_asset_sync"]
                print(
                    f"id {created['id']:<21}id {arrived['id']:<19}{latencies[-1]:>7.2f}s"
                    f"  origin={marker['origin']} event_id={marker['event_id']}",
                    flush=True,
                )
        runs = a3.wait_for_runs(dag_id, runs_before + 1)
        print(
            f"\nConsumer DAG {dag_id!r} in Airflow 3 now has {len(runs)} run(s);"
            f" newest: {runs[-1]['dag_run_id']}"
        )
        print(
            f"{EVENTS} events crossed; median latency {sorted(latencies)[len(latencies) // 2]:.2f}s"
        )
        worker.stop()
        print(f"Worker log: {workdir / 'worker.log'}")
    finally:
        REGISTRY.stop_all()
        log(f"demo finished in {time.monotonic() - started:.0f}s")


def _await_marker(
    target: AirflowInstance, client: httpx.Client, uri: str, source_id: int, timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in reversed(target.events(uri, client)):
            marker = event["extra"].get("airflow_asset_sync")
            if marker and marker.get("event_id") == source_id:
                return dict(event)
        time.sleep(0.1)
    raise SystemExit(f"event {source_id} did not reach the target within {timeout_s}s")


if __name__ == "__main__":
    main()
