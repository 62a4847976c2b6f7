"""Source requests counted where they arrive: a counting proxy in front of the source.

The worker's own metric (`aas_api_request_duration_seconds_count`) counts its client's
calls: one call that was retried, and the logins behind it, count once or not at all. A
figure about what a worker costs the source is counted at the source instead. The source's
access log does that when the worker is its only client (`bench.push.phase_idle`); when it
is not (workers side by side, the bench making events in the source), each worker talks to
the source through a proxy of its own that counts every request it carries: the rig's fault
proxy with no faults (`rig.faultproxy`, as `bench.soak` uses it). The spec keeps the
source's identity (`instanceId`), so markers and origins do not change with the port.

Where the worker is the source's only client and a proxy's hop would change the figure
itself (the catch-up rate of `bench.throughput`), the access log is counted instead
(`access_log_times`, whole seconds: count over windows of many seconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
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


_ACCESS_2 = re.compile(r'\[(\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d) [+-]\d{4}\] "[A-Z]+ ')
_ACCESS_3 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+Z .*\[http\.access\]")


def access_log_times(source: AirflowInstance) -> list[float]:
    """Unix seconds (whole) of every request in the source API server's access log.

    2.11: gunicorn's access log in the webserver's output; 3.3: the API server's
    `http.access` lines (health checks are not logged there).
    """
    if source.major == 2:
        path, pattern, fmt = source.home / "logs" / "webserver.log", _ACCESS_2, "%d/%b/%Y:%H:%M:%S"
    else:
        path, pattern, fmt = source.home / "logs" / "api-server.log", _ACCESS_3, "%Y-%m-%dT%H:%M:%S"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match:
            out.append(datetime.strptime(match[1], fmt).replace(tzinfo=UTC).timestamp())
    return out


def requests_between(times: list[float], start: float, end: float) -> int:
    """Requests among `times` (from `access_log_times`, read once) stamped in [start, end)."""
    return sum(1 for t in times if start <= t < end)
