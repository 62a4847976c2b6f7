"""The operator: kopf handlers over ordered reconcile steps. The only package importing kopf.

Modules: `config` (settings from env), `conditions` (types, reasons, the pure computation),
`reconcile` (the steps, no kopf), `handlers` (thin kopf adapters and the registry), `metrics`
(Prometheus), `entrypoint` (kopf settings and `run_operator`).

Public entry point: `run_operator`, called by `airflow-asset-sync operator`.
"""

from airflow_asset_sync.controller.entrypoint import run_operator

__all__ = ["run_operator"]
