"""Operator settings, read once from the environment at start.

Every setting carries its unit in its name and its env variable in its docstring. They are
process settings (one operator, many syncs), so they live in env rather than in any CR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from airflow_asset_sync.api.backoff import ceiling


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number") from exc
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ValueError(f"{name}={raw!r} is not a port number (0 disables)")
    return int(raw)


@dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Settings of the operator process."""

    #: `AAS_WORKER_IMAGE`: the worker image when `spec.worker.image` is unset. The chart sets
    #: it to the operator's own image. Unset and no `spec.worker.image`: the sync stalls.
    worker_image: str | None = None
    #: `AAS_RESYNC_SECONDS`: how often every sync is re-converged even without a change, so a
    #: deleted or edited child is put back and a rotated Secret rolls the worker.
    resync_seconds: float = 60.0
    #: `AAS_RETRY_BASE_SECONDS`: first delay after a retriable failure (a missing Secret, an
    #: API error); doubled on each retry up to `retry_max_seconds`, so never a hot loop.
    retry_base_seconds: float = 5.0
    #: `AAS_RETRY_MAX_SECONDS`: ceiling of that back-off.
    retry_max_seconds: float = 300.0
    #: `AAS_OPERATOR_METRICS_PORT`: Prometheus metrics of the operator; 0 disables. The CLI's
    #: `--metrics-port` overrides it.
    metrics_port: int = 9090
    #: `AAS_OPERATOR_HEALTH_PORT`: kopf's liveness endpoint (`/healthz`); 0 disables. The
    #: CLI's `--liveness-port` overrides it.
    health_port: int = 8080

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        return cls(
            worker_image=env.get("AAS_WORKER_IMAGE") or None,
            resync_seconds=_float(env, "AAS_RESYNC_SECONDS", cls.resync_seconds),
            retry_base_seconds=_float(env, "AAS_RETRY_BASE_SECONDS", cls.retry_base_seconds),
            retry_max_seconds=_float(env, "AAS_RETRY_MAX_SECONDS", cls.retry_max_seconds),
            metrics_port=_port(env, "AAS_OPERATOR_METRICS_PORT", cls.metrics_port),
            health_port=_port(env, "AAS_OPERATOR_HEALTH_PORT", cls.health_port),
        )

    def retry_delay_seconds(self, retry: int) -> float:
        """Back-off before retry number `retry` (0 for the first): exponential, capped, no
        jitter (`api.backoff` says why)."""
        return ceiling(retry, initial=self.retry_base_seconds, maximum=self.retry_max_seconds)
