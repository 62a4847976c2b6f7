"""Exponential back-off with optional jitter.

Why jitter: after a target outage every replayer of every sync retries; spreading the retries
avoids a synchronised burst against an API server that just came back (the measured 3.x
ceiling on SQLite is ~70 writes/s, as the benchmark measures it).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


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
        # The exponent is capped: a retry-forever loop (unknown asset) runs for days, and
        # factor**attempts would overflow a float long before that.
        exponent = min(self.attempts, 64)
        base = min(self.policy.maximum, self.policy.initial * self.policy.factor**exponent)
        self.attempts += 1
        spread = base * self.policy.jitter * (2 * self.rand() - 1)
        return max(0.0, base + spread)

    def reset(self) -> None:
        self.attempts = 0
