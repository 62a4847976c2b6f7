"""The CRD against a real kube-apiserver: structural schema, CEL rules, messages, explain.

Everything here is what `kubectl apply` really does: the API server's schema validation and
CEL evaluation (not an offline re-implementation) decide, and the messages it returns are the
ones a user reads. No operator runs in this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.api.status import ParkedAsset, TargetStatus
from rig.kube import KubeRig
from support import crd, live, manifests

pytestmark = pytest.mark.rig

TABLE = manifests.load()
CASES_NS = "crd-cases"
VALID_NS = "crd-valid"
CRD_NAME = f"{api.PLURAL}.{api.GROUP}"


@pytest.fixture(scope="module")
def cases_ns(sync_crd: KubeRig) -> str:
    return live.create_namespace(sync_crd, CASES_NS)


@pytest.fixture(scope="module")
def valid_ns(sync_crd: KubeRig) -> str:
    return live.create_namespace(sync_crd, VALID_NS)


def test_crd_is_established_with_a_structural_schema(sync_crd: KubeRig) -> None:
    status = live.get_any(sync_crd, "crd", CRD_NAME)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions["NamesAccepted"]["status"] == "True"
    # A non-structural schema would be served but with pruning and CEL switched off.
    assert "NonStructuralSchema" not in conditions
    assert status["acceptedNames"]["shortNames"] == ["aas"]
    assert status["acceptedNames"]["categories"] == ["airflow"]


def test_reapplying_the_crd_is_clean(sync_crd: KubeRig) -> None:
    """`kubectl apply` again (an upgrade with no change): accepted, no warnings from the server."""
    result = sync_crd.kubectl("apply", "-f", str(live.SYNC_CRD))
    assert "unchanged" in result.stdout or "configured" in result.stdout
    assert "Warning" not in result.stderr, result.stderr


def _sample_docs() -> list[tuple[str, list[dict[str, Any]]]]:
    return sorted(crd.load_samples().items())


@pytest.mark.parametrize(("filename", "docs"), _sample_docs(), ids=[n for n, _ in _sample_docs()])
def test_sample_applies_and_round_trips(
    sync_crd: KubeRig, filename: str, docs: list[dict[str, Any]]
) -> None:
    """Every sample is accepted as is, and its spec is stored verbatim: no field pruned and
    no server-side default added (a GitOps tool would otherwise diff forever)."""
    namespace = live.create_namespace(sync_crd, f"sample-{Path(filename).stem}")
    path = crd.SAMPLES_DIR / filename
    result = sync_crd.kubectl("apply", "-n", namespace, "-f", str(path))
    assert "Warning" not in result.stderr, result.stderr
    syncs = [d for d in docs if d["kind"] == api.KIND]
    assert syncs, f"{filename} has no {api.KIND}"
    for doc in syncs:
        stored = live.get(sync_crd, api.PLURAL, doc["metadata"]["name"], namespace)
        assert stored is not None
        assert stored["spec"] == doc["spec"]
    sync_crd.kubectl("delete", "-n", namespace, "-f", str(path), "--wait=true")


def _create(kube: KubeRig, namespace: str, manifest: dict[str, Any]) -> Any:
    return kube.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "name", input=json.dumps(manifest), check=False
    )


@pytest.mark.parametrize("case", TABLE.invalid, ids=[c.name for c in TABLE.invalid])
def test_invalid_manifest_is_rejected_naming_the_field(
    sync_crd: KubeRig, cases_ns: str, case: manifests.Case
) -> None:
    result = _create(sync_crd, cases_ns, case.manifest)
    assert result.returncode != 0, f"{case.name} was accepted:\n{result.stdout}"
    message = result.stderr
    # A validation rejection (422), not some other failure that also exits non-zero.
    assert "is invalid" in message, message
    for expected in case.expect:
        assert expected in message, f"{expected!r} not in the API server's message:\n{message}"
    name = case.manifest["metadata"]["name"]
    assert live.get(sync_crd, api.PLURAL, name, cases_ns) is None


def test_the_invalid_table_is_large_enough() -> None:
    assert len(TABLE.invalid) >= 40
    assert len(TABLE.valid) >= 10
    # Every invalid case names at least the field path it is about.
    assert all(c.expect and c.expect[0].startswith("spec") for c in TABLE.invalid)


@pytest.mark.parametrize("case", TABLE.valid, ids=[c.name for c in TABLE.valid])
def test_valid_edge_case_is_accepted(
    sync_crd: KubeRig, valid_ns: str, case: manifests.Case
) -> None:
    result = _create(sync_crd, valid_ns, case.manifest)
    assert result.returncode == 0, result.stderr
    name = case.manifest["metadata"]["name"]
    stored = live.get(sync_crd, api.PLURAL, name, valid_ns)
    assert stored is not None
    assert stored["spec"] == case.manifest["spec"]
    sync_crd.kubectl("delete", api.PLURAL, name, "-n", valid_ns, "--wait=true")


def test_unknown_fields_are_rejected_by_kubectl_and_pruned_otherwise(
    sync_crd: KubeRig, cases_ns: str
) -> None:
    """A typo in a field name is an error with kubectl's default strict field validation,
    and is dropped (never stored) when a client asks for no validation."""
    manifest = manifests.merge_patch(
        TABLE.base, {"metadata": {"name": "typo"}, "spec": {"pollIntervall": "1s"}}
    )
    strict = _create(sync_crd, cases_ns, manifest)
    assert strict.returncode != 0
    assert 'unknown field "spec.pollIntervall"' in strict.stderr
    lax = sync_crd.kubectl(
        "create",
        "-n",
        cases_ns,
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(manifest),
    )
    assert lax.returncode == 0
    stored = live.get(sync_crd, api.PLURAL, "typo", cases_ns)
    assert stored is not None
    assert "pollIntervall" not in stored["spec"]
    sync_crd.kubectl("delete", api.PLURAL, "typo", "-n", cases_ns)


def test_explain_shows_descriptions(sync_crd: KubeRig) -> None:
    def explained() -> str:
        result = sync_crd.kubectl("explain", "airflowassetsync.spec.targets", check=False)
        return result.stdout if result.returncode == 0 else ""

    # The OpenAPI document of a new CRD is published a moment after it is established.
    out = live.wait_for(explained, what="kubectl explain to know the CRD", timeout_s=60)
    schema = crd.root_schema(crd.load_crd())
    targets = schema["properties"]["spec"]["properties"]["targets"]
    assert "GROUP:      airflow-asset-sync.github.io" in out
    assert "FIELD: targets <[]Object>" in out
    assert " ".join(targets["description"].split()[:6]) in " ".join(out.split())
    # Its fields, each with its description's first words.
    for field in ("name", "url", "auth", "rewrite", "onUnknownAsset", "tls", "instanceId"):
        assert f"  {field}\t" in out, f"{field} not listed:\n{out}"
        words = " ".join(targets["items"]["properties"][field]["description"].split()[:4])
        assert words in " ".join(out.split()), f"description of {field} not shown:\n{out}"

    nested = sync_crd.kubectl("explain", "aas.spec.targets.onUnknownAsset").stdout
    assert "ENUM:" in nested
    assert "retry" in nested
    assert "skip" in nested


def test_printer_columns(sync_crd: KubeRig, valid_ns: str) -> None:
    """Columns come from the CRD: Ready/Status from conditions, Lag/Last Sync from status."""
    manifest = manifests.merge_patch(
        TABLE.base, {"metadata": {"name": "columns"}, "spec": {"suspend": True}}
    )
    live.apply(sync_crd, manifest, namespace=valid_ns)
    status = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Suspended",
                "message": "Suspended: the worker is scaled to zero",
                "lastTransitionTime": "2024-05-01T00:00:00Z",
            }
        ],
        "source": {"lastPollTime": "2024-05-01T00:00:00Z"},
        # The column shows the largest lag the worker wrote, not the first target's.
        "targets": [{"name": "b", "lagSeconds": 0.25}, {"name": "c", "lagSeconds": 1.5}],
        "lagSeconds": 1.5,
    }
    sync_crd.kubectl(
        "patch",
        "aas",
        "columns",
        "-n",
        valid_ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    table = sync_crd.kubectl("get", "aas", "columns", "-n", valid_ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "LAG", "LAST", "SYNC", "AGE"]
    assert table[1].split()[:4] == ["columns", "False", "Suspended:", "the"]
    assert "1.5" in table[1] and "0.25" not in table[1]
    wide = sync_crd.kubectl("get", "aas", "columns", "-n", valid_ns, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert "SUSPENDED" in header
    assert "true" in row.split()
    sync_crd.kubectl("delete", "aas", "columns", "-n", valid_ns)


def test_status_is_a_subresource(sync_crd: KubeRig, valid_ns: str) -> None:
    """The worker and the operator write status through /status; spec edits there are ignored,
    and a spec update does not touch status (two writers, disjoint fields)."""
    manifest = manifests.merge_patch(TABLE.base, {"metadata": {"name": "subresource"}})
    live.apply(sync_crd, manifest, namespace=valid_ns)
    sync_crd.kubectl(
        "patch",
        "aas",
        "subresource",
        "-n",
        valid_ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"observedGeneration": 7}, "spec": {"suspend": True}}),
    )
    stored = live.get(sync_crd, "aas", "subresource", valid_ns)
    assert stored is not None
    assert stored["status"] == {"observedGeneration": 7}
    assert "suspend" not in stored["spec"]
    generation = stored["metadata"]["generation"]
    live.apply(sync_crd, yaml.safe_load(json.dumps(manifest)) | {}, namespace=valid_ns)
    sync_crd.kubectl(
        "patch",
        "aas",
        "subresource",
        "-n",
        valid_ns,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
    )
    stored = live.get(sync_crd, "aas", "subresource", valid_ns)
    assert stored is not None
    assert stored["metadata"]["generation"] == generation + 1
    assert stored["status"] == {"observedGeneration": 7}
    sync_crd.kubectl("delete", "aas", "subresource", "-n", valid_ns)


def test_delivery_status_fields_survive_the_schema(sync_crd: KubeRig, valid_ns: str) -> None:
    """What the worker writes for the delivery modes (a held asset's reason, the coalesced
    count) is kept by the real API server, not pruned, and round-trips through the model."""
    manifest = manifests.merge_patch(
        TABLE.base,
        {
            "metadata": {"name": "delivery-status"},
            "spec": {
                "targets": [
                    {
                        "name": "b",
                        "url": "http://airflow-b:8080",
                        "delivery": {"mode": "oneRunPerEvent"},
                    }
                ]
            },
        },
    )
    live.apply(sync_crd, manifest, namespace=valid_ns)
    target = TargetStatus(name="b", events_coalesced=3, parked_events=1)
    target.parked.append(ParkedAsset(uri="s3://b/x", reason="awaitingConsumer", count=1))
    body = {"status": {"targets": [target.to_patch()]}}
    sync_crd.kubectl(
        "patch",
        "aas",
        "delivery-status",
        "-n",
        valid_ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(body),
    )
    stored = live.get(sync_crd, "aas", "delivery-status", valid_ns)
    assert stored is not None
    assert stored["spec"]["targets"][0]["delivery"] == {"mode": "oneRunPerEvent"}
    [written] = stored["status"]["targets"]
    assert written["eventsCoalesced"] == 3
    assert written["parked"][0]["reason"] == "awaitingConsumer"
    assert TargetStatus.model_validate(written) == target
    sync_crd.kubectl("delete", "aas", "delivery-status", "-n", valid_ns)
