"""Small tools the rig installs from PyPI into its cache: uv (fast, cached virtualenvs)."""

from __future__ import annotations

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
