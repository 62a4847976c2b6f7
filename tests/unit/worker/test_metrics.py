"""Metrics registry isolation, API latency, and the /metrics /healthz /readyz endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request

from airflow_asset_sync.clients.airflow.base import EventQuery
from airflow_asset_sync.worker.health import Health
from airflow_asset_sync.worker.metrics import (
    InstrumentedClient,
    WorkerMetrics,
    start_metrics_server,
)

from .fakes import FakeAirflow


def test_each_worker_has_its_own_registry() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.events_published.inc(3)
    assert a.value("aas_events_published_total") == 3
    assert b.value("aas_events_published_total") == 0


async def test_instrumented_client_times_calls_by_role_and_method() -> None:
    metrics = WorkerMetrics()
    server = FakeAirflow(api_version="v2")
    server.add_asset("s3://b/x")
    client = InstrumentedClient(server.client(), role="target:b", metrics=metrics)
    await client.list_events(EventQuery())
    await client.post_event("s3://b/x", {})
    await client.post_event("s3://b/x", {})
    count = "aas_api_request_duration_seconds_count"
    assert metrics.value(count, {"role": "target:b", "method": "post_event"}) == 2
    assert metrics.value(count, {"role": "target:b", "method": "list_events"}) == 1
    assert client.api_version == "v2"
    assert client.page_limit == 100


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_http_endpoint_serves_metrics_and_probes() -> None:
    now = [100.0]
    health = Health(monotonic=lambda: now[0], live_after=30, ready_after=60)
    metrics = WorkerMetrics()
    metrics.events_replayed.labels(target="b").inc()
    server = start_metrics_server(metrics=metrics, health=health, port=0, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        code, body = get(f"{base}/metrics")
        assert code == 200
        assert 'aas_events_replayed_total{target="b"} 1.0' in body

        assert get(f"{base}/readyz") == (503, "starting\n")
        health.started()
        assert get(f"{base}/readyz") == (503, "no successful poll yet\n")
        health.poll_succeeded()
        assert get(f"{base}/readyz") == (200, "ok\n")
        assert get(f"{base}/healthz") == (200, "ok\n")

        now[0] += 61  # no poll and no heartbeat for a minute
        assert get(f"{base}/readyz")[0] == 503
        assert get(f"{base}/healthz")[0] == 503
        health.beat()
        assert get(f"{base}/healthz")[0] == 200
        health.stopping()
        assert get(f"{base}/readyz") == (503, "stopping\n")
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.close()
