"""The worker as it was before the benchmark's fixes, for before/after figures in one run.

    AAS_BENCH_FIXED_POLL=1 AAS_BENCH_FULL_WINDOW=1 \\
        python -m bench.prototype run -f sync.yaml ...   (the same arguments as the product's CLI)

Each switch puts back one earlier behaviour of the worker and changes nothing else, so the
bench runs "before" next to the product ("after") on the same machine, in the same run:

- ``AAS_BENCH_FIXED_POLL=1``: poll every ``pollInterval`` whatever happened (before
  `poller.PollPace`). With a fixed interval an event waits U(0, interval) for the next poll,
  so the median latency is at least half the interval plus the pipeline.
- ``AAS_BENCH_FULL_WINDOW=1``: every read re-reads the whole overlap window behind the
  checkpoint (before ``settled_before``), and a 3.x catch-up reads one page at a time
  (before `cursor.v2.V2Cursor`'s prefetch).
- ``AAS_BENCH_WRITE_CONCURRENCY=N``: POSTs in flight per target (`ReplayerOptions.concurrency`
  and `HttpOptions.max_inflight_writes`). The product's default is 1: on the rig's
  SQLite-backed Airflow 3.3 two concurrent writes already deadlock on the database lock until
  SQLite's 5 s busy timeout, and the loser answers HTTP 500 (measured by the bench's raw loop).
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timedelta
from typing import Any

from airflow_asset_sync.api.status import Checkpoint
from airflow_asset_sync.clients.airflow import http as http_module
from airflow_asset_sync.worker import pipeline as pipeline_module
from airflow_asset_sync.worker import poller as poller_module
from airflow_asset_sync.worker.cursor import checkpoint as checkpoint_module
from airflow_asset_sync.worker.cursor import v2 as v2_module
from airflow_asset_sync.worker.replayer import ReplayerOptions


def _fixed_poll() -> None:
    real = poller_module.PollPace

    class FixedPace(real):  # type: ignore[misc,valid-type]
        def after(self, result: poller_module.PollResult, now: float) -> float:
            return 0.0 if result.more else self.interval

    poller_module.PollPace = FixedPace  # type: ignore[misc]


def _full_window() -> None:
    def lower_bound(checkpoint: Checkpoint, overlap: timedelta) -> datetime | None:
        if checkpoint.timestamp is None:
            return None
        return checkpoint.timestamp - overlap

    # Both strategies look it up in `cursor.checkpoint` at every read.
    checkpoint_module.lower_bound = lower_bound
    defaults = v2_module.V2Cursor.__init__.__kwdefaults__
    assert defaults is not None and "prefetch" in defaults
    defaults["prefetch"] = 1


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
    if os.environ.get("AAS_BENCH_FIXED_POLL") == "1":
        _fixed_poll()
    if os.environ.get("AAS_BENCH_FULL_WINDOW") == "1":
        _full_window()
    from airflow_asset_sync.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
