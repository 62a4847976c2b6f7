"""The one back-off formula (`api.backoff`) and its three users: the same ceiling, each with
its own jitter."""

from __future__ import annotations

import random

import pytest

from airflow_asset_sync.api.backoff import MAX_EXPONENT, ceiling, jittered
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.worker.backoff import BackoffPolicy


def test_ceiling_grows_by_the_factor_up_to_the_maximum() -> None:
    delays = [ceiling(n, initial=0.5, maximum=6.0) for n in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]
    assert [ceiling(n, initial=1.0, maximum=100.0, factor=3.0) for n in range(4)] == [
        1.0,
        3.0,
        9.0,
        27.0,
    ]


def test_ceiling_counts_a_negative_attempt_as_the_first() -> None:
    assert ceiling(-5, initial=2.0, maximum=10.0) == 2.0


def test_ceiling_of_a_retry_forever_loop_does_not_overflow() -> None:
    # 2.0**(10**6) would raise OverflowError; the exponent stops at MAX_EXPONENT.
    assert ceiling(10**6, initial=0.5, maximum=30.0) == 30.0
    assert ceiling(10**6, initial=1e-30, maximum=1e300) == 1e-30 * 2.0**MAX_EXPONENT


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 9.0), (0.5, 10.0), (0.999, 10.998)])
def test_jitter_spreads_by_a_fraction_of_the_delay(rand: float, expected: float) -> None:
    assert jittered(10.0, jitter=0.1, rand=rand) == pytest.approx(expected)


def test_jitter_never_goes_below_zero() -> None:
    assert jittered(10.0, jitter=3.0, rand=0.0) == 0.0
    assert jittered(10.0, jitter=0.0, rand=0.0) == 10.0


def test_the_worker_and_the_operator_follow_the_formula() -> None:
    policy = BackoffPolicy(initial=0.5, maximum=10.0, jitter=0.0)
    sequence = policy.start()
    config = OperatorConfig(retry_base_seconds=0.5, retry_max_seconds=10.0)
    expected = [ceiling(n, initial=0.5, maximum=10.0) for n in range(8)]
    assert [sequence.next() for _ in range(8)] == expected
    assert [config.retry_delay_seconds(n) for n in range(8)] == expected


def test_the_worker_jitters_around_the_ceiling() -> None:
    rng = random.Random(4)
    sequence = BackoffPolicy(initial=1.0, maximum=8.0, jitter=0.2).start(rand=rng.random)
    delays = [sequence.next() for _ in range(6)]
    for n, delay in enumerate(delays):
        top = ceiling(n, initial=1.0, maximum=8.0)
        assert 0.8 * top <= delay <= 1.2 * top
    assert delays != [ceiling(n, initial=1.0, maximum=8.0) for n in range(6)]
    sequence.reset()
    assert 0.8 <= sequence.next() <= 1.2
