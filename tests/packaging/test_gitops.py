"""deploy/gitops: the Argo CD health check in Lua, run by a real Lua 5.1 (Argo CD's gopher-lua
speaks 5.1) through lupa, against status objects the operator's own `conditions.compute`
produces, so the mapping follows the operator's condition semantics, not a copy of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.controller import conditions
from airflow_asset_sync.controller.conditions import Observed, Problem, Reason, WorkerPhase
from airflow_asset_sync.controller.hints import with_action
from rig.cache import ROOT
from support import chart
from support.argocd import HEALTH_KEY, HEALTH_LUA, run_health
from support.packaging_tools import CHART

GITOPS = ROOT / "deploy" / "gitops"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def sync(
    *,
    phase: WorkerPhase | None = WorkerPhase.AVAILABLE,
    problem: Problem | None = None,
    suspended: bool = False,
    generation: int = 3,
    observed_generation: int | None = None,
) -> dict[str, Any]:
    """An AirflowAssetSync whose status is what the operator writes for this situation."""
    obj: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "orders", "namespace": "data", "generation": generation},
        "spec": {"suspend": suspended},
    }
    if phase is not None:
        observed = Observed(
            generation=generation if observed_generation is None else observed_generation,
            suspended=suspended,
            worker=conditions.WorkerState(phase=phase, message=f"worker is {phase}"),
            problem=problem,
        )
        obj["status"] = {
            "observedGeneration": observed.generation,
            "conditions": conditions.compute(observed=observed, previous=None, now=NOW),
        }
    return obj


INVALID = Problem(reason=Reason.INVALID_SPEC, message="Invalid spec: bad regex", stalled=True)
NO_SECRET = Problem(reason=Reason.SECRET_NOT_FOUND, message='Secret "a" not found', stalled=False)

CASES = {
    "worker available": (sync(), "Healthy"),
    "rollout in progress": (sync(phase=WorkerPhase.PROGRESSING), "Progressing"),
    "worker not created yet": (sync(phase=WorkerPhase.MISSING), "Progressing"),
    "waiting for a Secret": (sync(problem=NO_SECRET), "Progressing"),
    "invalid spec": (sync(problem=INVALID), "Degraded"),
    "worker unavailable": (sync(phase=WorkerPhase.UNAVAILABLE), "Degraded"),
    "rollout failed": (sync(phase=WorkerPhase.FAILED), "Degraded"),
    "suspended": (sync(phase=WorkerPhase.SCALED_DOWN, suspended=True), "Suspended"),
    "suspended while scaling down": (
        sync(phase=WorkerPhase.PROGRESSING, suspended=True),
        "Suspended",
    ),
    "suspended and invalid": (sync(problem=INVALID, suspended=True), "Degraded"),
    "no status yet": (sync(phase=None), "Progressing"),
    "spec changed, not yet reconciled": (sync(observed_generation=2), "Progressing"),
}


def test_health_follows_the_operator_conditions() -> None:
    names = list(CASES)
    results = run_health([CASES[n][0] for n in names])
    got = {name: r["status"] for name, r in zip(names, results, strict=True)}
    assert got == {name: CASES[name][1] for name in names}


def test_health_messages_come_from_the_conditions() -> None:
    invalid, no_secret, fresh = run_health(
        [sync(problem=INVALID), sync(problem=NO_SECRET), sync(phase=None)]
    )
    # Argo CD shows the Stalled / Reconciling condition's message: with what to do.
    assert invalid["message"] == with_action("InvalidSpec", "Invalid spec: bad regex")
    assert invalid["message"].startswith("Invalid spec: bad regex. What to do: ")
    assert no_secret["message"] == with_action("SecretNotFound", 'Secret "a" not found')
    assert fresh["message"] == "Waiting for the operator to report status"


def test_lua_errors_are_reported_not_swallowed() -> None:
    """The runner is live: a status the script cannot read makes it fail loudly."""
    broken = sync()
    broken["status"]["conditions"] = "not a list"
    with pytest.raises(AssertionError, match=r"ipairs|table expected|bad argument"):
        run_health([broken])


def test_argocd_cm_embeds_health_lua_verbatim() -> None:
    cm = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"] == {HEALTH_KEY: HEALTH_LUA.read_text()}


def _docs(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((GITOPS / path).read_text()) if d]


def test_argocd_application_points_at_the_chart(tmp_path: Path) -> None:
    (app,) = _docs("argocd/application.yaml")
    assert app["kind"] == "Application"
    source = app["spec"]["source"]
    assert (ROOT / source["path"]) == CHART
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    # The values it passes are valid for the chart (helm applies values.schema.json).
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(source["helm"]["valuesObject"]))
    assert chart.render(values=[values])


def test_flux_release_uses_the_repository_and_upgrades_crds() -> None:
    (repo,) = _docs("flux/helmrepository.yaml")
    (release,) = _docs("flux/helmrelease.yaml")
    assert repo["kind"] == "HelmRepository"
    assert release["kind"] == "HelmRelease"
    ref = release["spec"]["chart"]["spec"]["sourceRef"]
    assert (ref["kind"], ref["name"], ref["namespace"]) == (
        "HelmRepository",
        repo["metadata"]["name"],
        repo["metadata"]["namespace"],
    )
    assert release["spec"]["chart"]["spec"]["chart"] == "airflow-asset-sync"
    assert (
        release["spec"]["install"]["crds"]
        == release["spec"]["upgrade"]["crds"]
        == ("CreateReplace")
    )
