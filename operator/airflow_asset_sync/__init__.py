"""airflow-asset-sync: keep Apache Airflow asset events in sync between Airflow deployments."""

__version__ = "0.1.0.dev0"
