"""Errors with consequences, on real pods: what `kubectl get` and `describe` say when the
worker cannot do its job.

Seen on a real cluster before this: with a wrong target password the sync showed READY True
and a LAG of 0.28 s while every write failed; with a wrong source password it said "Waiting
for the worker pod to be ready" for ten minutes, then "Worker rollout failed". Here the
worker pods the kubelet runs report their failures in status and the chart's operator pod
turns them into conditions.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.cluster import ClusterRig
from rig.sync import await_delivery
from support import live, pods
from support.pods import AAS, restricted_namespace
from support.release import Release
from support.stream import note

pytestmark = [pytest.mark.rig, pytest.mark.slow]

WRONG = "not-the-password-7f3a"


def _secret(cluster: ClusterRig, ns: str, name: str, username: str, password: str) -> None:
    manifest = cluster.kubectl(
        "-n", ns, "create", "secret", "generic", name,
        f"--from-literal=username={username}", f"--from-literal=password={password}",
        "--dry-run=client", "-o", "json",
    ).stdout  # fmt: skip
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=manifest)


def _sync(
    ns: str, name: str, *, source: str, src_secret: str, target: str, dst_secret: str, uri: str
) -> dict[str, Any]:
    return {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "source": {"url": source, "auth": {"password": {"secretName": src_secret}}},
            "targets": [
                {"name": "v2", "url": target, "auth": {"basic": {"secretName": dst_secret}}}
            ],
            "assets": {"include": [{"glob": uri}]},
            "pollInterval": "500ms",
            "startFrom": "latest",
        },
    }


def _reason(
    cluster: ClusterRig, ns: str, name: str, type_: str, reason: str
) -> dict[str, Any] | None:
    cond = live.condition(live.get(cluster, AAS, name, ns), type_)
    return cond if cond is not None and cond["reason"] == reason else None


def _row(cluster: ClusterRig, ns: str, name: str) -> dict[str, str]:
    """`kubectl get aas NAME` as a user reads it: column name -> value."""
    out = cluster.kubectl(
        "-n", ns, "get", "aas", name, "-o",
        "custom-columns=NAME:.metadata.name,LAG:.status.lagSeconds",
    ).stdout.splitlines()  # fmt: skip
    header, row = out[0].split(), out[1].split()
    return dict(zip(header, row, strict=True))


def _lag(
    cluster: ClusterRig, ns: str, name: str, *, at_least: float = 0.0, at_most: float = 1e9
) -> str | None:
    """The LAG column as shown when its value lies within the bounds; None otherwise (or
    blank). The text, not the number: a lag of 0 must count as found."""
    shown = _row(cluster, ns, name)["LAG"]
    if shown == "<none>":
        return None
    return shown if at_least <= float(shown) <= at_most else None


def test_wrong_passwords_and_a_down_target_say_so_and_what_to_do(
    cluster: ClusterRig,
    operator_release: Release,
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    assets: AssetPool,
) -> None:
    ns = restricted_namespace(cluster, "errors")
    (uri,) = assets.take(1)
    _secret(cluster, ns, "src", airflow3.username, airflow3.password)
    _secret(cluster, ns, "src-wrong", airflow3.username, WRONG)
    _secret(cluster, ns, "dst", airflow2.username, airflow2.password)
    _secret(cluster, ns, "dst-wrong", airflow2.username, WRONG)
    down = urlsplit(airflow2.pods_url)._replace(netloc=f"{urlsplit(airflow2.pods_url).hostname}:9")
    syncs = [
        _sync(ns, "bad-target", source=airflow3.pods_url, src_secret="src",
              target=airflow2.pods_url, dst_secret="dst-wrong", uri=uri),
        _sync(ns, "bad-source", source=airflow3.pods_url, src_secret="src-wrong",
              target=airflow2.pods_url, dst_secret="dst", uri=uri),
        _sync(ns, "down-target", source=airflow3.pods_url, src_secret="src",
              target=down.geturl(), dst_secret="dst", uri=uri),
    ]  # fmt: skip
    t0 = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": syncs}))  # fmt: skip

    # Wrong source password: Stalled, naming the source, while the pod is not ready.
    stalled = live.wait_for(
        lambda: _reason(cluster, ns, "bad-source", "Stalled", "SourceAuthFailed"),
        what="bad-source Stalled with SourceAuthFailed",
        timeout_s=120,
        interval_s=1.0,
    )
    source_stalled_s = time.monotonic() - t0
    ready = live.condition(live.get(cluster, AAS, "bad-source", ns), "Ready")
    assert ready is not None and ready["status"] == "False"
    assert ready["message"].startswith("Source authentication failed: "), ready
    assert "What to do: check the Secret" in stalled["message"]
    assert not pods.ready_pods(cluster, ns, "app.kubernetes.io/instance=bad-source")

    # Wrong target password: nothing is written until an event needs writing; then Stalled,
    # and the lag grows instead of showing the last healthy figure.
    live.wait_for(
        lambda: pods.sync_ready(cluster, ns, "bad-target"),
        what="bad-target Ready before any write",
        timeout_s=120,
        interval_s=1.0,
    )
    event = airflow3.create_event(uri, {"case": "wrong-target-password"})
    live.wait_for(
        lambda: _reason(cluster, ns, "bad-target", "Stalled", "TargetAuthFailed"),
        what="bad-target Stalled with TargetAuthFailed",
        timeout_s=90,
        interval_s=1.0,
    )
    sync = live.get(cluster, AAS, "bad-target", ns)
    ready = live.condition(sync, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert ready["message"].startswith('Target "v2" authentication failed: '), ready
    live.wait_for(
        lambda: _lag(cluster, ns, "bad-target", at_least=3.0),
        what="the Lag column growing while writes fail",
        timeout_s=60,
        interval_s=1.0,
    )
    described = cluster.kubectl("-n", ns, "describe", "aas", "bad-target").stdout
    assert "TargetAuthFailed" in described and "What to do:" in described
    events = cluster.kubectl(
        "-n", ns, "get", "events", "--field-selector", "involvedObject.name=bad-target",
        "-o", "jsonpath={range .items[*]}{.type} {.reason}{'\\n'}{end}",
    ).stdout  # fmt: skip
    assert "Warning TargetAuthFailed" in events, events

    # A target down: an outage, so Reconciling (not Stalled), once it has lasted a minute.
    reconciling = live.wait_for(
        lambda: _reason(cluster, ns, "down-target", "Reconciling", "TargetUnavailable"),
        what="down-target Reconciling with TargetUnavailable",
        timeout_s=150,
        interval_s=1.0,
    )
    assert live.condition(live.get(cluster, AAS, "down-target", ns), "Stalled") is None
    assert "since " in reconciling["message"]

    # Fixed: the Secrets corrected, the workers roll, the event arrives once, Ready again,
    # and the caught-up sync's lag is 0.
    _secret(cluster, ns, "dst-wrong", airflow2.username, airflow2.password)
    _secret(cluster, ns, "src-wrong", airflow3.username, airflow3.password)
    counts = await_delivery(airflow2, [uri], airflow3.pods_url, {event["id"]}, timeout_s=180)
    assert counts == {event["id"]: 1}
    for name in ("bad-target", "bad-source"):
        live.wait_for(
            functools.partial(pods.sync_ready, cluster, ns, name),
            what=f"{name} Ready after the fix",
            timeout_s=180,
            interval_s=1.0,
        )
        assert live.condition(live.get(cluster, AAS, name, ns), "Stalled") is None
    live.wait_for(
        lambda: _lag(cluster, ns, "bad-target", at_most=0.0),
        what="a caught-up sync shows a lag of 0",
        timeout_s=60,
        interval_s=1.0,
    )
    for name in ("bad-target", "bad-source"):
        status = json.dumps((live.get(cluster, AAS, name, ns) or {}).get("status"))
        assert WRONG not in status
        for pod in pods.pods(cluster, ns, f"app.kubernetes.io/instance={name}"):
            assert WRONG not in pods.logs(cluster, ns, pod["metadata"]["name"])
    note("errors-on-pods", source_auth_stalled_after_s=round(source_stalled_s, 1))
