"""The README's install and first-sync commands are the ones the suite checks.

The commands are found by what they are (the `helm install` line, the heredoc manifest),
not by the section they sit in, so the README can be rearranged without breaking this.
"""

from __future__ import annotations

import itertools
import re
import shlex

import pytest
import yaml

from airflow_asset_sync.api import spec as api
from rig.cache import ROOT
from rig.kube import KubeRig
from support import chart

README = (ROOT / "README.md").read_text()


def one(pattern: str, text: str = README) -> re.Match[str]:
    """The single match of `pattern`: two would leave a reader unsure which one is meant."""
    matches = list(re.finditer(pattern, text, re.S | re.M))
    assert len(matches) == 1, f"expected one {pattern!r} in README.md, found {len(matches)}"
    return matches[0]


def first_sync_manifest() -> dict[str, object]:
    match = one(r"<<'YAML'\n(.*?)\nYAML\n")
    manifest: dict[str, object] = yaml.safe_load(match.group(1))
    return manifest


def helm_install() -> list[str]:
    """The README's `helm install` command line, its continuation lines joined."""
    line = one(r"^helm install (?:[^\n]*\\\n)*[^\n]*$").group(0)
    return shlex.split(line.replace("\\\n", " "))


def test_crd_upgrade_command_is_the_one_the_suite_runs() -> None:
    command = "kubectl apply --server-side --force-conflicts -f charts/airflow-asset-sync/crds/"
    assert f"\n{command}\nhelm upgrade " in README  # in that order, in one block
    assert "never upgrades or deletes them" in README
    kind_script = (ROOT / "hack" / "kind-e2e.sh").read_text()
    assert 'apply --server-side --force-conflicts -f "$CHART/crds/"' in kind_script


def test_first_sync_is_a_valid_spec() -> None:
    manifest = first_sync_manifest()
    assert manifest["apiVersion"] == api.API_VERSION
    assert manifest["kind"] == api.KIND
    api.SyncSpec.model_validate(manifest["spec"])


def test_install_command_renders_the_image_the_readme_pushes() -> None:
    """The README's `helm install`, as written, renders a Deployment that runs the image the
    README's `docker push` sends, and `rollout status` names that Deployment."""
    args = helm_install()
    assert args[:4] == ["helm", "install", "airflow-asset-sync", "charts/airflow-asset-sync"]
    assert "--create-namespace" in args
    namespace = args[args.index("--namespace") + 1]
    sets = dict(value.split("=", 1) for flag, value in itertools.pairwise(args) if flag == "--set")
    objs = chart.render(release=args[2], namespace=namespace, sets=sets)
    deploy = chart.find(objs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    pushed = one(r"^docker push (\S+)$").group(1)
    assert container["image"] == pushed
    assert f"docker build -t {pushed} ." in README
    rollout = f"kubectl -n {namespace} rollout status deployment/{deploy['metadata']['name']}"
    assert rollout in README


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
