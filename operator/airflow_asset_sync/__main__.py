"""`python -m airflow_asset_sync` is the `airflow-asset-sync` command."""

from airflow_asset_sync.cli import main

main()
