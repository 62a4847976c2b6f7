"""Generated documentation stays in step with its source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_crd_reference_is_generated_from_the_current_crd() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-crd-reference"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_readme_shows_the_ci_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci
    assert "make test" in readme
    assert "make demo" in readme


def test_readme_reasons_table_is_rendered_from_the_hints_describe_shows() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-troubleshooting"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
