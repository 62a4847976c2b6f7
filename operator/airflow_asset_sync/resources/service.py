"""The worker's Service: where the source's listener plugin sends pokes (`spec.source.push`).

Only with `push`: a Service per sync otherwise costs an object and a cluster IP for nothing
(Prometheus scrapes the worker pods through the chart's PodMonitor, not through a Service).
It selects the worker pods by their immutable selector labels and exposes the one HTTP port
they serve (`/poke`, `/metrics` and the probes), under its name, so the number can change in
one place. The poke URL in ``status.pokeUrl`` is this Service's cluster DNS name
(`naming.poke_url`).
"""

from __future__ import annotations

from typing import Any

from airflow_asset_sync.resources.naming import (
    METRICS_PORT,
    METRICS_PORT_NAME,
    Owner,
    metadata,
    selector_labels,
    worker_service_name,
)


def worker_service(owner: Owner) -> dict[str, Any]:
    """A ClusterIP Service in front of the worker pod."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner=owner, name=worker_service_name(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [
                {
                    "name": "http",
                    "port": METRICS_PORT,
                    "targetPort": METRICS_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
