"""The listener plugin's sender: fire and forget, coalescing, bounded, token as bearer only.

Against a real HTTP server on loopback (the standard library's), no Airflow: the hooks
themselves are exercised in real Airflow 2.11 and 3.3 by tests/integration/test_push_real.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_asset_sync_listener import poke

TOKEN = "listener-Tok-9c2d"


class Recorder:
    """A poke endpoint that records requests and can hold them until released."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        self.release.set()
        self.arrived = threading.Semaphore(0)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder.headers.append(dict(self.headers))
                recorder.arrived.release()
                recorder.release.wait(10)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/poke"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts connections and never answers: the worst case for a sender."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/poke"
    sock.close()


def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_poke_carries_the_token_as_a_bearer_and_nothing_else(recorder: Recorder) -> None:
    sender = poke.Poker(poke.Settings(urls=[recorder.url], token=TOKEN))
    sender.poke()
    wait_for(lambda: sender.sent == [202])
    (headers,) = recorder.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Length"] == "0"
    assert TOKEN not in repr(sender.settings)


def test_poke_returns_at_once_when_the_worker_never_answers(black_hole: str) -> None:
    sender = poke.Poker(poke.Settings(urls=[black_hole], token=TOKEN, timeout_s=0.3))
    started = time.perf_counter()
    for _ in range(100):
        sender.poke()
    assert time.perf_counter() - started < 0.1  # 100 pokes, not one timeout
    wait_for(lambda: sender.sent[:1] == [0])  # the sender thread gave up, quietly


def test_pokes_while_one_is_in_flight_leave_exactly_one_more(recorder: Recorder) -> None:
    recorder.release.clear()
    sender = poke.Poker(poke.Settings(urls=[recorder.url], token=TOKEN, timeout_s=1.0))
    sender.poke()
    assert recorder.arrived.acquire(timeout=5)
    for _ in range(50):
        sender.poke()
    recorder.release.set()
    wait_for(lambda: len(sender.sent) == 2)
    time.sleep(0.2)  # nothing else may follow: a third request would arrive by now
    assert len(recorder.headers) == 2


def test_without_a_url_nothing_is_sent_and_no_thread_started() -> None:
    sender = poke.Poker(poke.Settings.from_env({}))
    sender.poke()
    assert sender.sent == []
    assert sender._thread is None


def test_settings_from_env_split_urls_and_bound_the_timeout() -> None:
    settings = poke.Settings.from_env(
        {
            poke.ENV_URL: "http://a:8080/poke, http://b:8080/poke",
            poke.ENV_TOKEN: TOKEN,
            poke.ENV_TIMEOUT: "30",
        }
    )
    assert list(settings.urls) == ["http://a:8080/poke", "http://b:8080/poke"]
    assert settings.timeout_s == poke.MAX_TIMEOUT_S == 1.0
    assert poke.Settings.from_env({poke.ENV_TIMEOUT: "soon"}).timeout_s == poke.DEFAULT_TIMEOUT_S


def test_flush_waits_for_a_poke_in_flight_but_no_longer_than_its_bound(
    recorder: Recorder,
) -> None:
    recorder.release.clear()
    sender = poke.Poker(poke.Settings(urls=[recorder.url], token=TOKEN, timeout_s=1.0))
    sender.poke()
    assert recorder.arrived.acquire(timeout=5)
    started = time.perf_counter()
    sender.flush(0.2)
    assert 0.15 < time.perf_counter() - started < 0.5


def test_the_plugin_never_imports_the_operator() -> None:
    """It is installed into Airflow's environment, where the operator is not."""
    package = Path(poke.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        assert "import airflow_asset_sync\n" not in text, source
        assert "from airflow_asset_sync." not in text, source
        assert "from airflow_asset_sync import" not in text, source
