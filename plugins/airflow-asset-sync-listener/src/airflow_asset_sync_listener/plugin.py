"""The Airflow plugin: registers `listener` (found through the ``airflow.plugins`` entry
point, so installing the package is all it takes)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_asset_sync_listener import listener


class AirflowAssetSyncListenerPlugin(AirflowPlugin):
    """Pokes the airflow-asset-sync worker(s) named in ``AIRFLOW_ASSET_SYNC_POKE_URL``."""

    name = "airflow_asset_sync_listener"
    listeners = [listener]
