"""Start the rig by hand for exploration, and stop it again.

    python -m rig.up      start etcd + kube-apiserver, Kafka, Airflow 2 and 3; print endpoints
    python -m rig.up down stop everything `up` started

The servers keep running after `up` returns (each is its own process group); their process
group ids and endpoints are kept in `.rig/state.json` for `down`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys

from rig.airflow import AIRFLOW2, AIRFLOW3, AirflowInstance
from rig.cache import ROOT
from rig.kafka import KafkaBroker
from rig.kube import KubeRig
from rig.procs import REGISTRY

STATE_DIR = ROOT / ".rig"
STATE = STATE_DIR / "state.json"


def up() -> None:
    if STATE.exists():
        sys.exit(f"the rig is already up ({STATE}); run `make rig-down` first")
    STATE_DIR.mkdir(exist_ok=True)
    atexit.unregister(REGISTRY.stop_all)
    try:
        kube = KubeRig(workdir=STATE_DIR / "kube")
        kube.start()
        broker = KafkaBroker(workdir=STATE_DIR / "kafka")
        broker.start()
        a2 = AirflowInstance(version=AIRFLOW2, home=STATE_DIR / "airflow2")
        a2.start()
        a3 = AirflowInstance(version=AIRFLOW3, home=STATE_DIR / "airflow3")
        a3.start()
    except BaseException:
        REGISTRY.stop_all()
        raise
    pgids = [s.proc.pid for s in REGISTRY._servers if s.proc is not None]
    state = {
        "pgids": pgids,
        "kubeconfig": str(kube.kubeconfig),
        "kubectl": str(kube.kubectl_bin),
        "kafka": broker.bootstrap,
        "airflow2": {"url": a2.url, "username": a2.username, "password": a2.password},
        "airflow3": {"url": a3.url, "username": a3.username, "password": a3.password},
    }
    STATE.write_text(json.dumps(state, indent=2))
    print(json.dumps(state, indent=2))
    print(f"\nexport KUBECONFIG={kube.kubeconfig}\nstop with: make rig-down")


def down() -> None:
    if not STATE.exists():
        print("the rig is not up")
        return
    state = json.loads(STATE.read_text())
    for pgid in reversed(state["pgids"]):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
    STATE.unlink()
    print("rig stopped")


if __name__ == "__main__":
    down() if sys.argv[1:] == ["down"] else up()
