"""The one back-off formula: capped exponential delays, and the jitter that spreads them.

Three places retry: the Airflow HTTP client (a few attempts inside one request), the
worker's loops (`worker.backoff`: polling, replaying, connecting, saving status) and the
operator's reconciles (`controller.config.OperatorConfig.retry_delay_seconds`). They share
this formula and differ only in their settings and in how much randomness they add:

- the HTTP client draws uniformly below the ceiling ("full jitter"): its retries are short
  and many replayers may hit one recovering instance at once, so spreading them widely
  matters more than keeping each delay near its nominal value;
- the worker's loops spread each delay by a fraction (`jittered`), so a long outage still
  backs off to the ceiling while replayers of different syncs drift apart;
- the operator adds none: kopf retries each object on its own schedule already, and the
  delay is shown to users (kopf logs it), where a round number reads better.

It lives in `api`, the lowest layer, because `clients`, `worker` and `controller` may all
import it and none of them may import each other (see the layers contract in
pyproject.toml). Pure: no clock, no sleeping, the random number is the caller's.
"""

from __future__ import annotations

#: Exponents stop growing here. A retry-forever loop (an unknown asset) runs for days, and
#: ``factor**attempt`` would overflow a float long before that; with factor 2, 2**64 times
#: any sane initial delay is already past any sane ceiling.
MAX_EXPONENT = 64


def ceiling(attempt: int, *, initial: float, maximum: float, factor: float = 2.0) -> float:
    """The delay before retry `attempt` (0 for the first): ``initial * factor**attempt``,
    capped at `maximum`. A negative `attempt` counts as 0."""
    exponent = min(max(attempt, 0), MAX_EXPONENT)
    return float(min(maximum, initial * factor**exponent))


def jittered(delay: float, *, jitter: float, rand: float) -> float:
    """`delay` spread by up to +-`jitter` of itself; `rand` is uniform in [0, 1).

    Never negative, whatever `jitter` is (a jitter above 1 could otherwise go below 0).
    """
    return max(0.0, delay + delay * jitter * (2 * rand - 1))
