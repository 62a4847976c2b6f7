"""Liveness and readiness for the worker pod's probes.

- Live: the event loop still runs. A heartbeat task touches `beat()` every second; the probe
  is answered from the HTTP server's thread, so a blocked or dead loop stops the beats and the
  kubelet restarts the pod. Deliberately *not* tied to the source or targets being reachable:
  a restart does not fix a down Airflow, and restarting would only reset the back-off.
- Ready: the worker has started and a poll succeeded recently. A source outage shows as
  not-ready, which is visible in `kubectl get pods` (no Service routes to the worker).
  So does a worker that may not write: waiting for its sync's Lease, or fenced after losing
  it (`hold`, see `lease`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: Readiness never expires sooner than this (seconds), however short ``pollInterval`` is.
MIN_READY_AFTER_S = 60.0
#: Polls that may be missed in a row before the worker reports not-ready.
MISSED_POLLS = 3


def readiness_timeout(poll_interval_s: float) -> float:
    """Seconds after the last successful poll before the worker is not ready.

    A poll succeeds once per interval at best, so a few missed ones (`MISSED_POLLS`) are
    allowed before reporting not-ready, and never less than `MIN_READY_AFTER_S`: with the
    default 1 s interval a source outage of a few seconds is not worth a probe failure, and
    ``pollInterval`` may be up to an hour.
    """
    return max(MIN_READY_AFTER_S, MISSED_POLLS * poll_interval_s)


@dataclass
class Health:
    """Probe state. Methods only assign floats/bools, so the HTTP thread may read them."""

    monotonic: Callable[[], float]
    #: Heartbeats older than this mean a stuck loop.
    live_after: float = 30.0
    #: A successful poll older than this means not ready (also: none yet); the worker sets
    #: it from its poll interval (`readiness_timeout`).
    ready_after: float = MIN_READY_AFTER_S
    _last_beat: float | None = field(default=None, init=False)
    _last_poll: float | None = field(default=None, init=False)
    _started: bool = field(default=False, init=False)
    _stopping: bool = field(default=False, init=False)
    _failed: str | None = field(default=None, init=False)
    _held_back: str | None = field(default=None, init=False)

    def beat(self) -> None:
        self._last_beat = self.monotonic()

    def started(self) -> None:
        self._started = True
        self.beat()

    def stopping(self) -> None:
        self._stopping = True

    def failed(self, reason: str) -> None:
        self._failed = reason

    def hold(self, reason: str | None) -> None:
        """Not ready for `reason` (not allowed to write), or None to lift that."""
        self._held_back = reason

    def poll_succeeded(self) -> None:
        self._last_poll = self.monotonic()

    def live(self) -> tuple[bool, str]:
        if self._failed is not None:
            return False, f"failed: {self._failed}"
        if self._last_beat is None:
            return True, "starting"
        age = self.monotonic() - self._last_beat
        if age > self.live_after:
            return False, f"event loop silent for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self._failed is not None:
            return False, f"failed: {self._failed}"
        if self._stopping:
            return False, "stopping"
        if self._held_back is not None:
            return False, self._held_back
        if not self._started:
            return False, "starting"
        if self._last_poll is None:
            return False, "no successful poll yet"
        age = self.monotonic() - self._last_poll
        if age > self.ready_after:
            return False, f"last successful poll {age:.0f}s ago"
        return True, "ok"
