"""Small tools the rig installs from PyPI into its cache: uv (fast, cached virtualenvs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rig.cache import CACHE, cached_in_place

UV_VERSION = "0.13.9"


def uv_bin() -> Path:
    def build(path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [
                str(path / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                f"uv=={UV_VERSION}",
            ],
            check=True,
        )

    return (
        cached_in_place(CACHE / "tools" / f"uv-{UV_VERSION}", build, name=f"uv {UV_VERSION}")
        / "bin"
        / "uv"
    )


def uv_venv(path: Path, *requirements: str) -> None:
    """A fresh Python 3.11 virtualenv at `path` with exactly `requirements` installed."""
    uv = str(uv_bin())
    env = dict(os.environ, UV_CACHE_DIR=str(CACHE / "uv-cache"))
    subprocess.run([uv, "venv", "-q", "-p", "python3.11", str(path)], check=True, env=env)
    python = str(path / "bin" / "python")
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, *requirements], check=True, env=env
    )
