"""Operator settings from the environment."""

from __future__ import annotations

import pytest

from airflow_asset_sync.controller.config import OperatorConfig


def test_defaults() -> None:
    config = OperatorConfig.from_env({})
    assert config == OperatorConfig()
    assert config.worker_image is None
    assert config.resync_seconds == 60.0


def test_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "AAS_WORKER_IMAGE": "ghcr.io/x/y:1",
            "AAS_RESYNC_SECONDS": "5",
            "AAS_RETRY_BASE_SECONDS": "0.5",
            "AAS_RETRY_MAX_SECONDS": "30",
            "AAS_OPERATOR_METRICS_PORT": "0",
            "AAS_OPERATOR_HEALTH_PORT": "9000",
        }
    )
    assert config == OperatorConfig(
        worker_image="ghcr.io/x/y:1",
        resync_seconds=5.0,
        retry_base_seconds=0.5,
        retry_max_seconds=30.0,
        metrics_port=0,
        health_port=9000,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AAS_RESYNC_SECONDS", "soon"),
        ("AAS_RESYNC_SECONDS", "0"),
        ("AAS_OPERATOR_METRICS_PORT", "70000"),
        ("AAS_OPERATOR_HEALTH_PORT", "-1"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        OperatorConfig.from_env({name: value})


def test_retry_delay_doubles_up_to_the_ceiling() -> None:
    config = OperatorConfig(retry_base_seconds=5, retry_max_seconds=300)
    assert [config.retry_delay_seconds(n) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert config.retry_delay_seconds(10**6) == 300
    assert config.retry_delay_seconds(-1) == 5
