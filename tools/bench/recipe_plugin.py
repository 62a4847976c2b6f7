"""The plain "listener -> REST" recipe, as a baseline for the push figures (bench only).

Not shipped, not the product: what people write instead of a sync. An Airflow listener
plugin in the source that, for every asset event, POSTs a copy to the target's REST API
itself, once, from a thread (so the source's request does not wait for the target), and
logs and drops it when that fails. It is as fast as a listener can be and keeps nothing:
every event made while the target is down is lost, which `bench.push` counts.

`bench.push` copies this file into the source's ``$AIRFLOW_HOME/plugins`` (Airflow imports
it by file name) and configures it from the environment:

- ``AAS_RECIPE_TARGET_URL``, ``AAS_RECIPE_USERNAME``, ``AAS_RECIPE_PASSWORD``: a 3.x target
  (JWT from ``/auth/token``);
- ``AAS_RECIPE_TAG``: written into each copy's extra (``{"recipe": TAG}``), so the bench
  finds the copies by marker;
- ``AAS_RECIPE_PAUSE_FILE``: while this file exists the recipe copies nothing (the bench
  pauses it during bursts).

The copy carries the source event's extra, which is how the bench matches it with the
source event (each bench event has a unique ``nonce``). Airflow 3.x hands the event to
``on_asset_event_emitted``; 2.x's ``on_dataset_changed`` gets only the dataset, so the
recipe reads the event's ``extra`` from the caller's frame (``register_dataset_change``):
a bench-only shortcut that gives the 2.x recipe the same data, at no extra request.

Standard library only: it runs in the rig's Airflow venvs, not the project's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0

_token: str | None = None
_ids: dict[str, int] = {}
_lock = threading.Lock()


def _request(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = os.environ["AAS_RECIPE_TARGET_URL"] + path
    headers = {"Content-Type": "application/json"}
    if _token is not None:
        headers["Authorization"] = f"Bearer {_token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return json.loads(response.read() or b"null")


def _login() -> None:
    global _token
    _token = None
    credentials = {
        "username": os.environ["AAS_RECIPE_USERNAME"],
        "password": os.environ["AAS_RECIPE_PASSWORD"],
    }
    _token = str(_request("POST", "/auth/token", credentials)["access_token"])


def _asset_id(uri: str) -> int:
    if uri not in _ids:
        query = urllib.parse.urlencode({"uri_pattern": uri, "limit": 100})
        assets = _request("GET", f"/api/v2/assets?{query}")["assets"]
        _ids[uri] = int(next(a["id"] for a in assets if a["uri"] == uri))
    return _ids[uri]


def _copy(uri: str, extra: dict[str, Any]) -> None:
    """One POST (a login first if needed); any failure drops the event, as the recipe does."""
    try:
        with _lock:
            if _token is None:
                _login()
            asset_id = _asset_id(uri)
        body = {"asset_id": asset_id, "extra": {**extra, "recipe": os.environ["AAS_RECIPE_TAG"]}}
        try:
            _request("POST", "/api/v2/assets/events", body)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            with _lock:
                _login()
            _request("POST", "/api/v2/assets/events", body)
    except Exception as exc:
        log.warning("recipe: event for %s not copied (lost): %s", uri, type(exc).__name__)


def _send(uri: str, extra: Any) -> None:
    pause = os.environ.get("AAS_RECIPE_PAUSE_FILE")
    if pause and os.path.exists(pause):
        return  # the bench's switch (see `bench.push.phase_bursts`), not the recipe's
    extra = dict(extra) if isinstance(extra, dict) else {}
    threading.Thread(target=_copy, args=(uri, extra), daemon=True).start()


def _frame_extra() -> Any:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "register_dataset_change":
            return frame.f_locals.get("extra")
        frame = frame.f_back  # type: ignore[assignment]
    return None


@hookimpl
def on_dataset_changed(dataset: Any) -> None:
    """Airflow 2.x (the event's extra from the caller's frame, see the module docstring)."""
    _send(str(dataset.uri), _frame_extra())


@hookimpl
def on_asset_event_emitted(asset_event: Any) -> None:
    """Airflow 3.x: the event, with its asset and extra."""
    _send(str(asset_event.asset.uri), asset_event.extra)


class RestRecipePlugin(AirflowPlugin):
    """Registers this module's hooks."""

    name = "aas_bench_rest_recipe"
    listeners = [sys.modules[__name__]]
