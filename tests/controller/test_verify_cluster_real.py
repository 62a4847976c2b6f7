"""`verify --namespace/--name`: the sync and its Secrets read from the real API server.

The sync and its Secrets are applied to the rig's kube-apiserver; a standalone worker with the
same namespace and name (so the same marker identity as the cluster's worker) delivers three
events from Airflow 3.3 to another 3.3. `verify` then reads the spec and the credentials
through the API with the caller's kubeconfig and finds all three. A user allowed to read the
sync but not its Secrets gets exit code 2 and the refusal, not a traceback; an unknown sync
is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.cache import ROOT
from rig.kube import KubeRig
from rig.sync import await_delivery, sync_manifests
from support import live

pytestmark = [pytest.mark.rig, pytest.mark.slow]


def _verify(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_asset_sync", "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "operator"), KUBECONFIG=str(kubeconfig)),
        check=False,
    )


def test_verify_reads_the_sync_and_its_secrets_through_the_api(
    sync_crd: KubeRig,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    sync_runner: Any,
) -> None:
    kube = sync_crd
    ns = live.create_namespace(kube, "verify-cluster")
    (uri,) = assets.take(1)
    docs = sync_manifests("vc", airflow3, [("t", airflow3b)], include=[uri])
    for doc in docs:
        doc["metadata"]["namespace"] = ns
    live.apply(kube, *docs)
    proc = sync_runner(docs)  # the worker, standalone, with the cluster sync's identity
    created = {airflow3.create_event(uri, {"n": i})["id"] for i in range(3)}
    assert await_delivery(airflow3b, [uri], airflow3.url, created) == dict.fromkeys(created, 1)
    proc.stop()

    found = _verify(kube.kubeconfig, "-n", ns, "--name", "vc", "--since", "10m", "--json")
    assert found.returncode == 0, found.stderr + found.stdout
    report = json.loads(found.stdout)
    assert report["sync"] == f"{ns}/vc"
    ((asset,),) = [t["assets"] for t in report["targets"]]
    assert (asset["sourceUri"], asset["expected"], asset["delivered"]) == (uri, 3, 3)

    # May read the sync, may not read Secrets: refused, named, exit 2, no traceback.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "sync-reader", "namespace": ns},
        "rules": [
            {
                "apiGroups": ["airflow-asset-sync.github.io"],
                "resources": ["airflowassetsyncs"],
                "verbs": ["get"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "sync-reader", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sync-reader"},
        "subjects": [{"kind": "User", "name": "sync-reader"}],
    }
    live.apply(kube, role, binding)
    reader = kube.mint("sync-reader")
    refused = _verify(reader, "-n", ns, "--name", "vc", "--since", "10m")
    assert refused.returncode == 2, refused.stderr + refused.stdout
    assert "cannot read the sync:" in refused.stderr and "Secret" in refused.stderr
    assert "403" in refused.stderr or "forbidden" in refused.stderr.lower()
    assert "Traceback" not in refused.stderr
    assert airflow3.password not in refused.stderr + refused.stdout

    unknown = _verify(kube.kubeconfig, "-n", ns, "--name", "nope", "--since", "10m")
    assert unknown.returncode == 2
    assert f"AirflowAssetSync {ns}/nope not found" in unknown.stderr
