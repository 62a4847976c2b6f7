"""The fault proxy itself: each fault does what its name says, and stopping leaves nothing.

Against a tiny real HTTP server on loopback (the standard library's), through httpx, so the
faults are seen exactly as the product's Airflow clients see them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rig.faultproxy import FAULTS, FaultProxy, ProxyError
from support import live


class _Upstream(BaseHTTPRequestHandler):
    hits = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._reply()

    def _reply(self) -> None:
        with _Upstream.lock:
            _Upstream.hits += 1
        body = b'{"ok": true, "padding": "' + b"x" * 4000 + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Upstream.hits = 0
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _only(kind: str) -> dict[str, float]:
    return {kind: 1.0}


def test_without_faults_requests_are_relayed_unchanged(upstream: int) -> None:
    with FaultProxy(upstream, fault_rate=0.0) as proxy, httpx.Client(base_url=proxy.url) as c:
        for _ in range(5):
            reply = c.post("/x", json={"a": 1})
            assert reply.status_code == 200
            assert reply.json()["ok"] is True
            assert reply.headers["connection"] == "close"
        assert proxy.stats()["ok"] == 5
    assert _Upstream.hits == 5


@pytest.mark.parametrize(
    ("kind", "reaches_server"), [("503", False), ("502", False), ("500", True), ("504", True)]
)
def test_status_faults_answer_with_that_status(
    upstream: int, kind: str, reaches_server: bool
) -> None:
    with FaultProxy(upstream, fault_rate=1.0, weights=_only(kind)) as proxy:
        reply = httpx.get(proxy.url + "/x")
    assert reply.status_code == int(kind)
    assert _Upstream.hits == (1 if reaches_server else 0)


def test_resets_break_the_connection_before_or_during_the_answer(upstream: int) -> None:
    with (
        FaultProxy(upstream, fault_rate=1.0, weights=_only("reset")) as proxy,
        pytest.raises(httpx.TransportError),
    ):
        httpx.get(proxy.url + "/x")
    assert _Upstream.hits == 0
    with (
        FaultProxy(upstream, fault_rate=1.0, weights=_only("reset_mid_response")) as proxy,
        pytest.raises(httpx.TransportError),
    ):
        httpx.get(proxy.url + "/x")
    assert _Upstream.hits == 1


def test_a_timeout_holds_the_request_until_the_client_gives_up(upstream: int) -> None:
    with FaultProxy(upstream, fault_rate=1.0, weights=_only("timeout"), hang_s=20) as proxy:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(proxy.url + "/x", timeout=httpx.Timeout(5.0, read=0.5))
        assert proxy.stats()["timeout"] == 1
    assert _Upstream.hits == 0


def test_mixed_faults_hit_about_the_configured_fraction(upstream: int) -> None:
    weights = {k: 1.0 for k in FAULTS if k != "timeout"}
    with FaultProxy(upstream, fault_rate=0.2, weights=weights, seed=3) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=5) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    client.get("/x")
        stats = proxy.stats()
    assert stats["requests"] == 200
    assert 20 <= 200 - stats["ok"] <= 60, stats


def test_stop_ends_the_thread_and_frees_the_port(upstream: int) -> None:
    proxy = FaultProxy(upstream, fault_rate=1.0, weights=_only("timeout"), hang_s=60).start()
    outcome: list[BaseException] = []

    def wait_on_a_hang() -> None:
        try:
            httpx.get(proxy.url, timeout=30)
        except httpx.TransportError as exc:
            outcome.append(exc)

    hung = threading.Thread(target=wait_on_a_hang)
    hung.start()
    # The request must be hanging inside the proxy before the stop: stopping first would
    # refuse the connection, and a ConnectError proves nothing about cutting a hang off.
    live.wait_for(lambda: proxy.stats()["timeout"] == 1 or None, what="the request hanging")
    thread = proxy._thread
    proxy.stop()
    proxy.stop()  # idempotent
    hung.join(timeout=10)
    assert thread is not None and not thread.is_alive()
    assert not hung.is_alive()
    assert outcome, "the hung request was not cut off by stop()"
    assert not isinstance(outcome[0], httpx.ConnectError), outcome
    with pytest.raises(httpx.ConnectError):
        httpx.get(proxy.url, timeout=2)


def test_only_loopback_upstreams() -> None:
    with pytest.raises(ProxyError):
        FaultProxy(80, upstream_host="10.0.0.1")
    with pytest.raises(ProxyError):
        FaultProxy(80, weights={"explode": 1.0})
