"""Source requests counted where they arrive: a counting proxy in front of the source.

The worker's own metric (`aas_api_request_duration_seconds_count`) counts its client's
calls: one call that was retried, and the logins behind it, count once or not at all. A
figure about what a worker costs the source is counted at the source instead. The source's
access log does that when the worker is its only client (`bench.push.phase_idle`); when it
is not (workers side by side, the bench making events in the source), each worker talks to
the source through a proxy of its own that counts every request it carries: the rig's fault
proxy with no faults (`rig.faultproxy`, as `bench.soak` uses it). The spec keeps the
source's identity (`instanceId`), so markers and origins do not change with the port.
"""

from __future__ import annotations

from typing import Any, Self

from rig.airflow import AirflowInstance
from rig.faultproxy import FaultProxy


class CountedSource:
    """One worker's way to `source`, counting the requests the source receives from it."""

    def __init__(self, source: AirflowInstance) -> None:
        self.source = source
        self.proxy = FaultProxy(int(source.url.rsplit(":", 1)[1]), fault_rate=0.0)

    def start(self) -> Self:
        self.proxy.start()
        return self

    def stop(self) -> None:
        self.proxy.stop()

    def route(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The sync's manifests with the source reached through this proxy."""
        source = docs[-1]["spec"]["source"]
        source["url"] = self.proxy.url
        source["instanceId"] = self.source.url
        return docs

    def requests(self) -> int:
        """Requests carried so far (logins and retries included)."""
        return int(self.proxy.stats()["requests"])
