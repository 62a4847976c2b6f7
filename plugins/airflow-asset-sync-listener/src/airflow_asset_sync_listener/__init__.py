"""Poke an airflow-asset-sync worker when this Airflow registers an asset event.

`poke` is the sender (standard library only, no Airflow import, so it can be tested and
reasoned about alone); `listener` holds the hook implementations; `plugin` registers them
with Airflow through the ``airflow.plugins`` entry point.
"""

__version__ = "0.1.0.dev0"
