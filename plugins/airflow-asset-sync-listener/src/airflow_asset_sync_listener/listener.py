"""The hook implementations Airflow calls: one per major version, each only a poke.

Airflow 2.x calls ``on_dataset_changed(dataset=...)`` and 3.x ``on_asset_changed(asset=...)``
from inside the code that registers the event, before its transaction commits (2.11
``DatasetManager.register_dataset_change``, 3.3 ``AssetManager.register_asset_change``;
2.11 does not even catch a listener's exception there). So the hooks look at nothing, catch
everything, and leave the work to the sender thread; the worker re-reads shortly after a
poke that found nothing yet, to cover the commit still under way.

pluggy accepts implementations of hooks the running Airflow has no spec for, so one module
serves both versions.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

from airflow_asset_sync_listener.poke import poker

log = logging.getLogger(__name__)


def _poke() -> None:
    try:
        poker().poke()
    except Exception:  # never into the task
        log.debug("airflow-asset-sync poke failed", exc_info=True)


@hookimpl
def on_dataset_changed(dataset: Any) -> None:
    """Airflow 2.x: a dataset event was registered (task outlet or REST)."""
    _poke()


@hookimpl
def on_asset_changed(asset: Any) -> None:
    """Airflow 3.x: an asset event was registered (task outlet or REST)."""
    _poke()
