"""A real Prometheus server on loopback (Debian's `prometheus` package), for the dashboard.

It scrapes static targets every `interval` (short, so a test sees data within seconds), keeps
its TSDB in the given directory, and is a rig `Server`: its own process group, its log in a
file, stopped by `stop()` and by the rig's registry at exit. `query_range` and `label_values`
ask its HTTP API what Grafana's panels and template variables would.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from rig.procs import Server, free_port

BINARY = "prometheus"


@dataclass(frozen=True)
class ScrapeTarget:
    """One `/metrics` endpoint on loopback, with the labels a PodMonitor or ServiceMonitor
    would attach (`namespace`, `sync`, ...)."""

    job: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    #: (unix time, value) pairs; NaN where the expression had no defined value.
    values: list[tuple[float, float]]

    @property
    def finite(self) -> list[float]:
        return [v for _, v in self.values if math.isfinite(v)]


def binary() -> str:
    found = shutil.which(BINARY)
    assert found, "prometheus is missing: scripts/host-setup installs Debian's prometheus package"
    return found


class PrometheusServer:
    def __init__(
        self, workdir: Path, targets: Sequence[ScrapeTarget], *, interval: str = "1s"
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        jobs: dict[str, list[ScrapeTarget]] = {}
        for target in targets:
            jobs.setdefault(target.job, []).append(target)
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": interval, "evaluation_interval": interval},
                    "scrape_configs": [
                        {
                            "job_name": job,
                            "scrape_timeout": interval,
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{t.port}"], "labels": dict(t.labels)}
                                for t in group
                            ],
                        }
                        for job, group in jobs.items()
                    ],
                }
            )
        )
        self.server = Server(
            "prometheus",
            [
                binary(),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log_path=workdir / "prometheus.log",
            cwd=workdir,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.server.start()
        self.server.wait_ready(self._ready, timeout_s=60, what="ready")
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def _api(self, path: str, params: Mapping[str, Any]) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=dict(params), timeout=30)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {dict(params)}: {response.text[:500]}")
        return body["data"]

    def targets_up(self) -> dict[str, bool]:
        """`job/instance` -> whether its last scrape succeeded."""
        data = self._api("targets", {"state": "active"})
        return {
            f"{t['labels']['job']}/{t['labels']['instance']}": t["health"] == "up"
            for t in data["activeTargets"]
        }

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[Series]:
        data = self._api("query_range", {"query": expr, "start": start, "end": end, "step": step})
        assert data["resultType"] == "matrix", data["resultType"]
        return [
            Series(
                labels=dict(item["metric"]),
                values=[(float(t), float(v)) for t, v in item["values"]],
            )
            for item in data["result"]
        ]

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        values: list[str] = self._api(
            f"label/{label}/values", {"match[]": match, "start": start, "end": end}
        )
        return values

    def wait_scraped(self, timeout_s: float = 30) -> None:
        """Until every target has been scraped successfully once."""
        deadline = time.monotonic() + timeout_s
        while True:
            up = self.targets_up()
            if up and all(up.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus targets not all up: {up}")
            time.sleep(0.5)
