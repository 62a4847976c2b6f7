"""`airflow-asset-sync run`: its help shows every default, its port keeps clear of Airflow's,
and a busy port is one line naming the flag, exit code 2, no traceback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_asset_sync import cli
from airflow_asset_sync.resources import naming

ROOT = Path(__file__).resolve().parents[2]

#: Ports an Airflow host uses: webserver/api-server, log servers, flower.
AIRFLOW_PORTS = {8080, 8793, 8794, 5555}

MANIFEST = """\
apiVersion: v1
kind: Secret
metadata: {name: a-creds}
stringData: {username: admin, password: pw-not-a-real-one}
---
apiVersion: airflow-asset-sync.github.io/v1alpha1
kind: AirflowAssetSync
metadata: {name: a-to-b}
spec:
  source: {url: "http://127.0.0.1:9", auth: {basic: {secretName: a-creds}}}
  targets:
    - {name: b, url: "http://127.0.0.1:9", auth: {password: {secretName: a-creds}}}
"""


def test_run_metrics_port_default_is_not_an_airflow_port() -> None:
    args = cli._parser().parse_args(["run", "-f", "sync.yaml"])
    assert args.metrics_port == cli.RUN_METRICS_PORT == 9108
    assert args.metrics_port not in AIRFLOW_PORTS


def test_worker_default_port_is_the_one_the_deployment_declares() -> None:
    args = cli._parser().parse_args(["worker", "--namespace", "ns", "--name", "s"])
    assert args.metrics_port == naming.METRICS_PORT


def test_run_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--help"])
    assert exit_info.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even at hyphens
    assert "(default:airflow-asset-sync-state.json)" in text
    assert "(default:9108)" in text
    assert "SIGTERM" in text


@contextlib.contextmanager
def _busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_busy_metrics_port_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    manifest = tmp_path / "sync.yaml"
    manifest.write_text(MANIFEST)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    with _busy_port() as port:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "airflow_asset_sync",
                "run",
                "-f",
                str(manifest),
                "--state",
                str(tmp_path / "state.json"),
                "--metrics-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert f"--metrics-port {port} is in use" in errors[0]
    assert "choose another with --metrics-port" in errors[0]
    assert not (tmp_path / "state.json").exists()
