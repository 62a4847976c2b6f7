"""Provision every rig component into the cache, printing how long each step took.

    python -m rig.provision [kube] [kafka] [airflow] [helm] [cluster]     (default: all)

The test fixtures provision lazily too; running this first makes the cold cost visible as
separate phases (CI prints them) instead of hiding it inside the first test that needs it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from rig import airflow, cluster, gobuild, kafka
from rig.cache import CACHE, log, phase
from rig.tools import uv_bin

STEPS: dict[str, Callable[[], object]] = {
    "kube": lambda: (gobuild.etcd(), gobuild.kubernetes()),
    "helm": gobuild.helm,
    "kafka": kafka.provision,
    "airflow": lambda: (airflow.venv(airflow.AIRFLOW2), airflow.venv(airflow.AIRFLOW3)),
    # kubelet, controllers, kube-proxy, CoreDNS, the pause/base/project images
    "cluster": cluster.provision,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(STEPS)}")
    args = parser.parse_args()
    unknown = sorted(set(args.parts) - set(STEPS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    started = time.monotonic()
    log(f"cache: {CACHE}")
    uv_bin()
    for part in args.parts or STEPS:
        with phase(f"provision {part}"):
            STEPS[part]()
    log(f"provisioning done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
