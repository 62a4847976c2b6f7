"""The poke sender: fire and forget, off the caller's thread, bounded, never raising.

Why a single sender thread with a "pending" flag, rather than a thread (or a request) per
event: a backfill registers thousands of events in a burst, and the worker reads everything
new at each poll anyway, so a second poke queued behind one in flight adds nothing. At most
one poke is in flight and one pending, whatever the event rate; the worker's own rate limit
protects it from the rest.

Why a daemon thread: the caller is Airflow registering an event, inside a task or a REST
request, *before* its transaction commits. Nothing on that path may wait for the network or
see an exception from it. A daemon thread does not keep a finishing task process alive
either; `atexit` gives a pending poke at most `timeout_s` to go out, after the task's work.

The token is sent only as ``Authorization: Bearer`` and appears in no log line, exception
or repr.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

ENV_URL = "AIRFLOW_ASSET_SYNC_POKE_URL"
ENV_TOKEN = "AIRFLOW_ASSET_SYNC_POKE_TOKEN"
ENV_TIMEOUT = "AIRFLOW_ASSET_SYNC_POKE_TIMEOUT"
#: Seconds one poke may take (connect and answer): short, so a worker that is down or a
#: network that drops packets costs the sender thread little and the task nothing.
DEFAULT_TIMEOUT_S = 0.5
MAX_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Settings:
    """Where and how to poke; from the environment of the Airflow process."""

    urls: Sequence[str]
    token: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        urls = [u.strip() for u in env.get(ENV_URL, "").split(",") if u.strip()]
        try:
            timeout = float(env.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_S))
        except ValueError:
            timeout = DEFAULT_TIMEOUT_S
        timeout = min(max(timeout, 0.05), MAX_TIMEOUT_S)
        return cls(urls=tuple(urls), token=env.get(ENV_TOKEN) or None, timeout_s=timeout)


def send(url: str, token: str | None, timeout_s: float) -> int:
    """One poke; the HTTP status, or 0 when it did not get one (down, timeout, refused)."""
    headers = {"Content-Length": "0", "User-Agent": "airflow-asset-sync-listener"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=b"", headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except Exception:  # anything at all: the worker is an optional accelerator
        return 0


class Poker:
    """Sends pokes from one daemon thread; `poke` returns at once and never raises."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._sending = False
        #: Outcomes (HTTP status or 0), for tests and debugging; the last 100.
        self.sent: list[int] = []

    def poke(self) -> None:
        if not self.settings.urls:
            return
        try:
            self._ensure_thread()
            self._pending.set()
        except Exception:  # never into the task
            log.debug("airflow-asset-sync poke not scheduled", exc_info=True)

    def _ensure_thread(self) -> None:
        # Airflow forks (task runners, gunicorn workers): a thread does not survive a fork,
        # so each process starts its own sender on first use.
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._pending = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="airflow-asset-sync-poke", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._pending.wait()
            self._sending = True
            self._pending.clear()
            for url in self.settings.urls:
                status = send(url, self.settings.token, self.settings.timeout_s)
                if status not in (202, 429):
                    log.debug("airflow-asset-sync poke to %s answered %s", url, status)
                self.sent.append(status)
                del self.sent[:-100]
            self._sending = False

    def flush(self, timeout_s: float) -> None:
        """At exit: give a poke pending or in flight up to `timeout_s` (bounded, never
        raises). A short-lived task process would otherwise exit before its poke left."""
        deadline = time.monotonic() + timeout_s
        while (self._pending.is_set() or self._sending) and time.monotonic() < deadline:
            time.sleep(0.01)


_POKER: Poker | None = None
_POKER_LOCK = threading.Lock()


def poker() -> Poker:
    """The process's one `Poker`, configured from the environment on first use."""
    global _POKER
    with _POKER_LOCK:
        if _POKER is None:
            _POKER = Poker(Settings.from_env())
            if _POKER.settings.urls:
                atexit.register(_POKER.flush, _POKER.settings.timeout_s)
        return _POKER
