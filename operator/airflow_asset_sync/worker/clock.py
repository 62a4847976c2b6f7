"""Time, injected.

Every wait in the worker (poll interval, back-off, status flush) goes through a `Clock`, so
tests drive time by hand instead of sleeping: a test that needs "one poll interval later"
advances a fake clock and the worker wakes at once. Production uses `SystemClock`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC (status timestamps, lag)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (intervals, staleness)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def sleep_or_stop(clock: Clock, stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; True when stopped.

    Why a race and not a plain sleep: a SIGTERM must not wait out a 60 s back-off, and the
    pod only has its termination grace period to finish in-flight work.
    """
    if stop.is_set():
        return True
    if seconds <= 0:
        await asyncio.sleep(0)
        return stop.is_set()
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            if not task.done():
                task.cancel()
        await asyncio.gather(sleeper, stopper, return_exceptions=True)
    return stop.is_set()


async def sleep_or_wake(
    clock: Clock, stop: asyncio.Event, wake: asyncio.Event, seconds: float
) -> bool:
    """Sleep `seconds` unless `stop` or `wake` is set first; True when `wake` ended it.

    The poller's sleep with pokes enabled: a poke sets `wake`, and the next read is due now.
    A wake already set when the sleep starts (a poke during the read) ends it at once.
    """
    if not (stop.is_set() or wake.is_set()):
        waits = [
            asyncio.ensure_future(clock.sleep(max(0.0, seconds))),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(wake.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    return wake.is_set() and not stop.is_set()
