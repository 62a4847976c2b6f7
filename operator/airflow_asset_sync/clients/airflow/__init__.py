"""Airflow REST API clients: `v1` for Airflow 2.x datasets, `v2` for Airflow 3.x assets."""
