"""docs/standalone.md ("Run it without Kubernetes") says what the code does: its sync.yaml
passes `check` with the env it exports, its env names are the worker's, its defaults are
`run`'s. The whole page is read, not a section of it, so the page can be rearranged freely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_asset_sync import cli
from airflow_asset_sync.resources import naming
from airflow_asset_sync.worker import app

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "standalone.md").read_text()


def test_its_sync_yaml_passes_check_with_the_env_it_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (yaml_block,) = re.findall(r"```yaml\n(# sync\.yaml\n.*?)```", PAGE, re.S)
    (export,) = re.findall(r"^export (.*)$", PAGE, re.M)
    for name, value in re.findall(r"(\w+)=('[^']*'|\S+)", export):
        monkeypatch.setenv(name, value.strip("'"))
    path = tmp_path / "sync.yaml"
    path.write_text(yaml_block)
    assert app.check(str(path)) == 0, capsys.readouterr().out
    assert "warning" not in capsys.readouterr().out


def test_env_names_and_defaults_are_the_code_s() -> None:
    section = " ".join(PAGE.split())
    fields: tuple[naming.CredentialField, ...] = ("USERNAME", "PASSWORD", "TOKEN")
    for field in fields:
        assert f"`{naming.source_credential_env(field)}`" in section
    assert naming.target_credential_env("x", "USERNAME").replace("_X_", "_<NAME>_") in section
    assert f"`{naming.kafka_credential_env('PASSWORD')}`" in section
    defaults = cli._parser().parse_args(["run", "-f", "x"])
    assert f"default `{defaults.state}`" in section
    assert f"default {defaults.metrics_port}" in section
    assert "airflow-asset-sync run -f sync.yaml" in section
