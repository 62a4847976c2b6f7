"""The worker's retry delays: a policy per loop, and one growing sequence per retry run.

The formula is `api.backoff`'s (shared with the HTTP client and the operator); this module
holds the state a loop needs (how many attempts so far, `reset()` after a success).

Why jitter: after a target outage every replayer of every sync retries; spreading the retries
avoids a synchronised burst against an Airflow that just came back. A SQLite-backed Airflow
takes one write at a time, so a burst only queues (`make bench BENCH_ARGS="--only replay"`
measures that ceiling: raw POSTs to the target before and after a replay window).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_asset_sync.api.backoff import ceiling, jittered


@dataclass(frozen=True)
class BackoffPolicy:
    """Delays `initial`, `initial*factor`, ... capped at `maximum`, each spread by +-`jitter`."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1

    def start(self, *, rand: Callable[[], float] = random.random) -> Backoff:
        return Backoff(policy=self, rand=rand)


@dataclass
class Backoff:
    """One sequence of growing delays; `reset()` after a success."""

    policy: BackoffPolicy
    rand: Callable[[], float] = random.random
    attempts: int = field(default=0)

    def next(self) -> float:
        policy = self.policy
        base = ceiling(
            self.attempts, initial=policy.initial, maximum=policy.maximum, factor=policy.factor
        )
        self.attempts += 1
        return jittered(base, jitter=policy.jitter, rand=self.rand())

    def reset(self) -> None:
        self.attempts = 0
