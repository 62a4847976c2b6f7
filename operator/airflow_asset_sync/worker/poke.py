"""Pokes: the source's listener plugin asks the poller to poll now (`spec.source.push`).

A poke is only a hint. It carries no event data the sync trusts: the poller reads events
from the source's API as always, so a forged, lost or late poke can at worst cost one extra
read, and a missing one only the latency the poll interval already allows.

Two halves, on two sides of a thread boundary:

- `PokeGate` runs in the HTTP server's thread (see `metrics.MetricsServer`). It checks the
  bearer token in constant time (`hmac.compare_digest`: a byte-by-byte compare would leak the
  token's prefix through response times), applies a token-bucket rate limit, and counts each
  outcome in ``aas_pokes_total{result}``.
- `Wakeup` carries an accepted poke into the event loop (`call_soon_threadsafe`) as one
  `asyncio.Event`. The poller clears it just before each read and sleeps until the next read
  is due *or* it is set, so any number of pokes during one read cause exactly one more read:
  an event, not a queue. Why not a queue or a counter: the poller reads everything new at
  each read, so a second queued poke would read nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from airflow_asset_sync.worker.metrics import WorkerMetrics

#: Accepted pokes per second, sustained. The source is read at most this often because of
#: pokes (a read takes 10-130 ms), whatever the plugin or an attacker with the token sends.
DEFAULT_RATE_PER_S = 10.0
#: Pokes accepted at once after a quiet spell: a DAG run emitting several events at the end
#: of its tasks pokes a few times within milliseconds.
DEFAULT_BURST = 20

PokeResult = Literal["accepted", "unauthorized", "forbidden", "rate_limited", "disabled"]

#: HTTP status per outcome: 202 (a poll is due; nothing is promised about its result), 401
#: without credentials, 403 with wrong ones, 429 when over the limit, 404 when the worker
#: takes no pokes (no `spec.source.push`): as if the endpoint did not exist.
STATUS: dict[PokeResult, int] = {
    "accepted": 202,
    "unauthorized": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "disabled": 404,
}


class Wakeup:
    """One pending "poll now", set from any thread, awaited in the loop that created it."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self.event = asyncio.Event()

    def set_threadsafe(self) -> None:
        """Set the event from another thread; a no-op once the loop is closed (stopping)."""
        # A closed loop raises RuntimeError: the worker is gone, and so is the poll.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.event.set)


@dataclass
class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; thread-safe."""

    rate_per_s: float
    burst: int
    monotonic: Callable[[], float]
    _tokens: float = field(init=False)
    _at: float = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._at = self.monotonic()

    def take(self) -> bool:
        with self._lock:
            now = self.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class PokeGate:
    """Decides on one poke request: authenticate, rate-limit, wake, count."""

    def __init__(
        self,
        *,
        token: str | None,
        wake: Callable[[], None],
        metrics: WorkerMetrics,
        monotonic: Callable[[], float],
        rate_per_s: float = DEFAULT_RATE_PER_S,
        burst: int = DEFAULT_BURST,
    ) -> None:
        self._token = token.encode() if token else None
        self._wake = wake
        self._metrics = metrics
        self._bucket = TokenBucket(rate_per_s=rate_per_s, burst=burst, monotonic=monotonic)

    def __repr__(self) -> str:  # never the token
        return f"PokeGate(enabled={self._token is not None})"

    def handle(self, authorization: str | None) -> PokeResult:
        """The outcome for a request with this ``Authorization`` header value."""
        result = self._decide(authorization)
        self._metrics.pokes.labels(result=result).inc()
        if result == "accepted":
            self._wake()
        return result

    def _decide(self, authorization: str | None) -> PokeResult:
        if self._token is None:
            return "disabled"
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "unauthorized"
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            return "forbidden"
        if not self._bucket.take():
            return "rate_limited"
        return "accepted"
