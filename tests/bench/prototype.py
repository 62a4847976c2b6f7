"""Prototypes of proposed worker changes, for measurement only (the product is not edited).

    AAS_BENCH_WRITE_CONCURRENCY=1 AAS_BENCH_ADAPTIVE_POLL=1 \\
        python -m bench.prototype run -f sync.yaml ...   (the same arguments as the product's CLI)

Each switch replaces one default of the worker and nothing else, so the bench can run the
proposal next to the product on the same events and put numbers on it:

- ``AAS_BENCH_WRITE_CONCURRENCY=N``: POSTs in flight per target (`ReplayerOptions.concurrency`
  and `HttpOptions.max_inflight_writes`, both 4 in the product). On the rig's SQLite-backed
  Airflow 3.3 two concurrent writes already deadlock on the database lock until SQLite's 5 s
  busy timeout, and the loser answers HTTP 500 (measured by the bench's raw loop).
- ``AAS_BENCH_OVERLAP_FIX=1``: re-read only the part of the overlap window behind the
  checkpoint where a late row can still appear (`_bounded_overlap`).
- ``AAS_BENCH_ADAPTIVE_POLL=1``: poll every `FAST_S` while events flow (a new event within
  the last `HOLD_S` seconds) and every ``pollInterval`` when the source is quiet. With a
  fixed interval an event waits U(0, interval) for the next poll, so the median latency is at
  least half the interval plus the pipeline (above 0.5 s at the default 1 s), while a shorter
  interval multiplies the idle source load (capped at 1 request/s by the issue). Adaptive
  polling keeps the idle cost of ``pollInterval`` and the latency of `FAST_S` under load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_asset_sync.api.status import Checkpoint
from airflow_asset_sync.clients.airflow import http as http_module
from airflow_asset_sync.worker import cursor as cursor_module
from airflow_asset_sync.worker import pipeline as pipeline_module
from airflow_asset_sync.worker import poller as poller_module
from airflow_asset_sync.worker.clock import sleep_or_stop
from airflow_asset_sync.worker.replayer import ReplayerOptions

FAST_S = float(os.environ.get("AAS_BENCH_FAST_POLL_S", "0.2"))
HOLD_S = float(os.environ.get("AAS_BENCH_HOLD_S", "10"))


async def adaptive_run(self: poller_module.Poller, stop: asyncio.Event) -> None:
    """`Poller.run` with the delay chosen by recent activity (see the module docstring)."""
    backoff = self._error_backoff.start()
    active_until = 0.0
    while not stop.is_set():
        try:
            result = await self.poll_once()
        except Exception as exc:
            kind = type(exc).__name__
            self.status.last_error = f"{kind}: {exc}"
            self._metrics.poll_errors.labels(kind=kind).inc()
            delay = backoff.next()
            poller_module.log.warning(
                "poll failed; retrying",
                extra={**self._log_extra, "error": self.status.last_error, "delay_s": delay},
            )
        else:
            backoff.reset()
            now = time.monotonic()
            if result.read:
                active_until = now + HOLD_S
            if result.more:
                delay = 0.0
            elif now < active_until:
                delay = min(FAST_S, self._poll_interval)
            else:
                delay = self._poll_interval
        if await sleep_or_stop(self._clock, stop, delay):
            break


#: Margin for the time between a row's timestamp and the worker's clock (same host here; a
#: product version would take the source's own time, e.g. the HTTP Date header).
SKEW = timedelta(seconds=1)


def _bounded_overlap() -> None:
    """Re-read the overlap window only where a late row can still appear.

    A row that is not visible yet has a timestamp within `overlap` of *now* (that is the
    overlap's own assumption), so the part of the window older than ``now - overlap`` was
    complete when it was last read and need not be read again. The product re-reads the
    whole window behind the checkpoint on every poll: during a catch-up that is about half
    a page of re-reads per 100 new events, and a source idle after a burst costs
    (events in the window / 100) requests per poll, for good.
    """
    real = cursor_module._lower_bound

    def lower_bound(checkpoint: Checkpoint, overlap: timedelta) -> datetime | None:
        lower = real(checkpoint, overlap)
        if lower is None or checkpoint.timestamp is None:
            return lower
        horizon = datetime.now(UTC) - overlap - SKEW
        return max(lower, min(checkpoint.timestamp, horizon))

    cursor_module._lower_bound = lower_bound


def _write_concurrency(n: int) -> None:
    real_worker_options = pipeline_module.WorkerOptions
    real_http_options = http_module.HttpOptions

    def worker_options(**kwargs: Any) -> Any:
        kwargs.setdefault("replayer", ReplayerOptions(concurrency=n))
        return real_worker_options(**kwargs)

    def http_options(**kwargs: Any) -> Any:
        kwargs.setdefault("max_inflight_writes", n)
        return real_http_options(**kwargs)

    # Both modules look the name up when they build their defaults (`WorkerOptions()` in
    # `SyncWorker.__init__`, `HttpOptions()` in `AirflowHttp.__init__`).
    pipeline_module.WorkerOptions = worker_options  # type: ignore[misc,assignment]
    http_module.HttpOptions = http_options  # type: ignore[misc,assignment]
    assert dataclasses.is_dataclass(real_worker_options)


def main() -> None:
    concurrency = os.environ.get("AAS_BENCH_WRITE_CONCURRENCY")
    if concurrency:
        _write_concurrency(int(concurrency))
    if os.environ.get("AAS_BENCH_OVERLAP_FIX") == "1":
        _bounded_overlap()
    if os.environ.get("AAS_BENCH_ADAPTIVE_POLL") == "1":
        poller_module.Poller.run = adaptive_run  # type: ignore[method-assign]
    from airflow_asset_sync.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
