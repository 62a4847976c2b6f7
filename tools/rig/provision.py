"""Provision every rig component into the cache, printing how long each step took.

    python -m rig.provision [kube] [kafka] [airflow] [helm] [cluster]     (default: all)

The test fixtures provision lazily too; running this first makes the cold cost visible as
separate phases (CI prints them) instead of hiding it inside the first test that needs it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

#: With no parts named, everything is provisioned in two lanes at once: the Go builds, which
#: keep both cores busy, and the steps that mostly wait on downloads and dpkg (Maven Central,
#: PyPI, Debian), so a cold machine does not pay for both one after the other.
LANES: tuple[dict[str, Callable[[], object]], ...] = (
    {
        "kube": STEPS["kube"],
        "helm": STEPS["helm"],
        "cluster binaries": cluster.provision_binaries,
    },
    {
        "kafka": STEPS["kafka"],
        "airflow": STEPS["airflow"],
        "cluster images": cluster.provision_images,
    },
)


def _run_lane(lane: dict[str, Callable[[], object]]) -> None:
    for name, step in lane.items():
        with phase(f"provision {name}"):
            step()


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
    if args.parts:
        _run_lane({part: STEPS[part] for part in args.parts})
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(LANES)) as pool:
            for done in [pool.submit(_run_lane, lane) for lane in LANES]:
                done.result()  # re-raises the first failure
    log(f"provisioning done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
