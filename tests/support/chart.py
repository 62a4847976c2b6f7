"""Running helm on the chart: render to objects, install into the rig, and small lookups."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rig.cache import ROOT
from support.packaging_tools import CHART, helm_bin

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
#: The Kubernetes version of the rig's API server: `helm template` renders for it (a helm
#: built from source assumes 1.20 otherwise, below the chart's kubeVersion).
KUBE_VERSION = "v1.34.4"

Obj = dict[str, Any]


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        [str(helm_bin()), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result


def _value_args(
    values: Iterable[Path] = (),
    sets: Mapping[str, str] | None = None,
    json_sets: Sequence[str] = (),
) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    for item in json_sets:
        args += ["--set-json", item]
    return args


def template_text(
    *,
    release: str = "aas",
    namespace: str = "aas-system",
    values: Iterable[Path] = (),
    sets: Mapping[str, str] | None = None,
    json_sets: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *_value_args(values, sets, json_sets),
        check=check,
    )


def render(
    *,
    release: str = "aas",
    namespace: str = "aas-system",
    values: Iterable[Path] = (),
    sets: Mapping[str, str] | None = None,
    json_sets: Sequence[str] = (),
) -> list[Obj]:
    """The chart's objects (templates only; crds/ is not rendered by `helm template`)."""
    text = template_text(
        release=release, namespace=namespace, values=values, sets=sets, json_sets=json_sets
    ).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(
    objs: Sequence[Obj], kind: str, name: str | None = None, namespace: str | None = None
) -> Obj:
    found = select(objs, kind, name=name, namespace=namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def select(
    objs: Sequence[Obj], kind: str, *, name: str | None = None, namespace: str | None = None
) -> list[Obj]:
    return [
        o
        for o in objs
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def operator_container(objs: Sequence[Obj]) -> Obj:
    deploy = find(objs, "Deployment")
    containers: list[Obj] = deploy["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def env_of(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or ()}
