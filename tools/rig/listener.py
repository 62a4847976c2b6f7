"""The listener plugin (`plugins/airflow-asset-sync-listener`) installed for a rig Airflow.

Installed with uv into a folder of its own (`pip install --target`), which the instance gets
on its PYTHONPATH (`AirflowInstance.extra_env`): Airflow finds the plugin through its
`airflow.plugins` entry point exactly as after a `pip install`, while the rig's cached venvs,
which every other test shares, stay as they are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rig.airflow import venv
from rig.cache import CACHE, ROOT
from rig.tools import uv_bin

PACKAGE = ROOT / "plugins" / "airflow-asset-sync-listener"


def install_plugin(version: str, into: Path) -> Path:
    """Build and install the package for that Airflow's Python; returns the site folder.

    Built from a copy: setuptools writes `build/` and `*.egg-info` next to its sources.
    """
    source = into / "src"
    shutil.copytree(
        PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = into / "site"
    python = str(venv(version) / "bin" / "python")
    target = ["--target", str(site), "--python", python]
    subprocess.run(
        [str(uv_bin()), "pip", "install", "-q", *target, str(source)],
        check=True,
        env=dict(os.environ, UV_CACHE_DIR=str(CACHE / "uv-cache")),
    )
    assert (site / "airflow_asset_sync_listener" / "listener.py").exists()
    return site


def plugin_env(site: Path, *, url: str, token: str, timeout_s: float = 1.0) -> dict[str, str]:
    """What an Airflow with the plugin needs in its environment."""
    return {
        "PYTHONPATH": str(site),
        "AIRFLOW_ASSET_SYNC_POKE_URL": url,
        "AIRFLOW_ASSET_SYNC_POKE_TOKEN": token,
        "AIRFLOW_ASSET_SYNC_POKE_TIMEOUT": str(timeout_s),
    }


def with_push(docs: list[dict[str, Any]], *, name: str, token: str) -> None:
    """Turn on `spec.source.push` in a sync's manifests (the last document), with the
    token in a Secret `<name>-poke` put first."""
    docs.insert(
        0,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-poke"},
            "stringData": {"token": token},
        },
    )
    docs[-1]["spec"]["source"]["push"] = {"token": {"secretName": f"{name}-poke"}}
