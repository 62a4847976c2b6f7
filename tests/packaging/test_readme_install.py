"""The README's install and first-sync instructions say what the suite checks."""

from __future__ import annotations

import re

import pytest
import yaml

from airflow_asset_sync.api import spec as api
from rig.cache import ROOT
from rig.kube import KubeRig
from support import chart

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def first_sync_manifest() -> dict[str, object]:
    text = section("Your first sync in five minutes")
    match = re.search(r"<<'YAML'\n(.*?)\nYAML\n", text, re.S)
    assert match, "no manifest in the five-minute section"
    manifest: dict[str, object] = yaml.safe_load(match.group(1))
    return manifest


def test_sections_are_there() -> None:
    for title in (
        "The two commands",
        "Install on a cluster with Helm",
        "Your first sync in five minutes",
        "GitOps",
        "End-to-end on kind (Docker required)",
    ):
        assert f"\n## {title}\n" in README


def test_crd_upgrade_command_is_the_one_the_suite_runs() -> None:
    install = section("Install on a cluster with Helm")
    assert "kubectl apply --server-side --force-conflicts -f charts/airflow-asset-sync/crds/" in (
        install
    )
    assert "never upgrades or deletes them" in install
    kind_script = (ROOT / "hack" / "kind-e2e.sh").read_text()
    assert 'apply --server-side --force-conflicts -f "$CHART/crds/"' in kind_script


def test_first_sync_is_a_valid_spec() -> None:
    manifest = first_sync_manifest()
    assert manifest["apiVersion"] == api.API_VERSION
    assert manifest["kind"] == api.KIND
    api.SyncSpec.model_validate(manifest["spec"])


def test_install_command_renders() -> None:
    """`helm install airflow-asset-sync ... --set image.repository=...` as written."""
    objs = chart.render(
        release="airflow-asset-sync",
        namespace="airflow-asset-sync",
        sets={"image.repository": "registry.example.com/platform/airflow-asset-sync"},
    )
    deploy = chart.find(objs, "Deployment")
    assert deploy["metadata"]["name"] == "airflow-asset-sync"  # `rollout status` in the README
    assert "deployment/airflow-asset-sync" in section("Install on a cluster with Helm")


@pytest.mark.rig
def test_first_sync_passes_the_api_server(chart_crds: KubeRig) -> None:
    manifest = first_sync_manifest()
    chart_crds.kubectl("create", "namespace", "pkg-readme", check=False)
    result = chart_crds.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        "pkg-readme",
        "-f",
        "-",
        input=yaml.safe_dump(manifest),
        check=False,
    )
    assert result.returncode == 0, result.stderr
