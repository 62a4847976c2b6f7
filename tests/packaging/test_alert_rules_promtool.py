"""The chart's alert rules, checked and unit-tested by Prometheus' own `promtool`.

`promtool check rules` parses every rule and its annotation templates as Prometheus would.
`promtool test rules` then evaluates the rules over synthetic series: each alert fires on the
series that should fire it (after its `for`, not before), and none fires on a healthy sync.
A deliberately wrong expectation must make promtool fail, so the check cannot pass vacuously.

The expected alerts are compared on labels; annotations are taken out of the copy of the rules
that is unit-tested (promtool compares them verbatim), after `check rules` passed on the real
ones. promtool comes from Debian's `prometheus` package (`scripts/host-setup`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import find, render
from support.packaging_tools import CHART

MONITORING = CHART / "ci" / "monitoring-values.yaml"
JOB = "aas-airflow-asset-sync-metrics"  # the operator's Service, release "aas"
NS = "aas-system"
SYNC = {"namespace": "data", "sync": "orders"}
HEALTHY = {"namespace": "data", "sync": "reports"}
ALERTS = (
    "AirflowAssetSyncNotReady",
    "AirflowAssetSyncLagHigh",
    "AirflowAssetSyncPollStale",
    "AirflowAssetSyncNeverPolled",
    "AirflowAssetSyncReplayErrors",
    "AirflowAssetSyncReconcileProblems",
    "AirflowAssetSyncOperatorDown",
)


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: scripts/host-setup installs Debian's prometheus package"
    return found


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _fires(alert: str, at: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels}]}


def _silent(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def _rules(tmp_path: Path) -> tuple[Path, Path]:
    """The rendered rules as a Prometheus rule file, and a copy without annotations."""
    groups = find(render(values=[MONITORING]), "PrometheusRule")["spec"]["groups"]
    full = tmp_path / "rules.yaml"
    full.write_text(yaml.safe_dump({"groups": groups}))
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    bare = tmp_path / "rules-bare.yaml"
    bare.write_text(yaml.safe_dump({"groups": groups}))
    return full, bare


def _firing_group() -> dict[str, Any]:
    target = {**SYNC, "target": "v3"}
    return {
        "name": "a sick sync fires each alert",
        "interval": "1m",
        "input_series": [
            _series("airflow_asset_sync_status_condition", {**SYNC, "type": "Ready"}, "0x40"),
            _series("aas_lag_seconds", target, "200x40"),
            # Last successful poll stuck at t=60 s; another sync never polled (0).
            _series("aas_last_successful_poll_timestamp_seconds", SYNC, "60x40"),
            _series("aas_last_successful_poll_timestamp_seconds", {**SYNC, "sync": "new"}, "0x40"),
            _series("aas_replay_errors_total", {**target, "kind": "Unavailable"}, "0+1x40"),
            _series(
                "airflow_asset_sync_operator_reconcile_errors_total",
                {"namespace": NS, "reason": "SecretNotFound"},
                "0+1x40",
            ),
            _series("up", {"job": JOB, "namespace": NS}, "0x40"),
        ],
        "alert_rule_test": [
            _silent("AirflowAssetSyncNotReady", "5m"),  # pending: `for: 10m`
            _fires("AirflowAssetSyncNotReady", "15m", {**SYNC, "severity": "warning"}),
            _fires("AirflowAssetSyncLagHigh", "15m", {**target, "severity": "warning"}),
            _fires("AirflowAssetSyncPollStale", "10m", {**SYNC, "severity": "warning"}),
            _fires(
                "AirflowAssetSyncNeverPolled", "10m", {**SYNC, "sync": "new", "severity": "warning"}
            ),
            _silent("AirflowAssetSyncReplayErrors", "10m"),  # pending: `for: 15m`
            _fires("AirflowAssetSyncReplayErrors", "25m", {**target, "severity": "warning"}),
            _fires(
                "AirflowAssetSyncReconcileProblems",
                "25m",
                {"reason": "SecretNotFound", "severity": "warning"},
            ),
            _fires("AirflowAssetSyncOperatorDown", "10m", {"severity": "critical"}),
        ],
    }


def _healthy_group() -> dict[str, Any]:
    target = {**HEALTHY, "target": "v3"}
    return {
        "name": "a healthy sync fires nothing",
        "interval": "1m",
        "input_series": [
            _series("airflow_asset_sync_status_condition", {**HEALTHY, "type": "Ready"}, "1x40"),
            _series("aas_lag_seconds", target, "0x40"),
            # Polled every minute: the timestamp keeps up with the clock.
            _series("aas_last_successful_poll_timestamp_seconds", HEALTHY, "60+60x40"),
            _series("aas_replay_errors_total", {**target, "kind": "Unavailable"}, "3x40"),
            _series(
                "airflow_asset_sync_operator_reconcile_errors_total",
                {"namespace": NS, "reason": "SecretNotFound"},
                "2x40",
            ),
            _series("up", {"job": JOB, "namespace": NS}, "1x40"),
        ],
        "alert_rule_test": [_silent(alert, "35m") for alert in ALERTS],
    }


def _test_rules(
    tmp_path: Path, rules: Path, groups: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "tests.yaml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": groups})
    )
    return subprocess.run(
        [_promtool(), "test", "rules", spec.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_accepts_every_rule_and_annotation_template(tmp_path: Path) -> None:
    full, _ = _rules(tmp_path)
    result = subprocess.run(
        [_promtool(), "check", "rules", str(full)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout + result.stderr


def test_each_alert_fires_on_a_sick_sync_and_none_on_a_healthy_one(tmp_path: Path) -> None:
    _, bare = _rules(tmp_path)
    fired = {t["alertname"] for t in _firing_group()["alert_rule_test"] if t["exp_alerts"]}
    assert fired == set(ALERTS)  # every alert has a firing case
    result = _test_rules(tmp_path, bare, [_firing_group(), _healthy_group()])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("alert", ["AirflowAssetSyncLagHigh", "AirflowAssetSyncOperatorDown"])
def test_a_wrong_expectation_fails(tmp_path: Path, alert: str) -> None:
    """The healthy group, told to expect an alert: promtool must say it did not fire."""
    _, bare = _rules(tmp_path)
    group = _healthy_group()
    group["alert_rule_test"] = [_fires(alert, "35m", {"severity": "warning"})]
    result = _test_rules(tmp_path, bare, [group])
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr
