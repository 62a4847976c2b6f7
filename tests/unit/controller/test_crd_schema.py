"""Properties of the CRD itself: documentation, no defaults, CEL hygiene, columns."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_asset_sync.api import spec as api
from support import crd as crdfile


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return crdfile.load_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crdfile.root_schema(crd)


def test_names_match_the_api_constants(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{api.PLURAL}.{api.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == api.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == api.KIND
    assert spec["names"]["plural"] == api.PLURAL
    assert spec["names"]["shortNames"] == ["aas"]
    assert spec["names"]["categories"] == ["airflow"]
    version = crdfile.version(crd)
    assert version["name"] == api.VERSION
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}


def test_every_field_has_a_description(schema: dict[str, Any]) -> None:
    """`kubectl explain` prints these: an undocumented field is an unusable field."""
    assert schema.get("description")
    missing = [
        path
        for path, how, node in crdfile.walk(schema)
        if how in ("property", "items")
        and not str(node.get("description", "")).strip()
        # The API server rejects a CRD that says anything about metadata but name and
        # generateName constraints, a description included.
        and path != "metadata"
    ]
    assert missing == []


def _find_key(node: Any, key: str, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(path)
            found += _find_key(v, key, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _find_key(v, key, f"{path}[{i}]")
    return found


def test_no_defaults_anywhere(crd: dict[str, Any]) -> None:
    """A server-side default lands in `spec` and GitOps tools then diff forever."""
    assert _find_key(crd, "default") == []


def test_schema_is_structural_and_prunes_unknown_fields(schema: dict[str, Any]) -> None:
    untyped = [path for path, _, node in crdfile.walk(schema) if "type" not in node]
    assert untyped == []
    preserved = [
        path
        for path, _, node in crdfile.walk(schema)
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    # Only the pod affinity, passed through verbatim to the Deployment.
    assert preserved == ["spec.worker.affinity"]
    both = [
        path
        for path, _, node in crdfile.walk(schema)
        if "properties" in node and "additionalProperties" in node
    ]
    assert both == []


def test_every_cel_rule_has_a_message(schema: dict[str, Any]) -> None:
    rules = [
        (path, rule)
        for path, _, node in crdfile.walk(schema)
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 15
    assert all(rule.get("message") for _, rule in rules), rules


def test_cel_inputs_are_bounded(schema: dict[str, Any]) -> None:
    """The API server rejects a CRD whose rules' estimated cost is unbounded."""
    unbounded = [
        path
        for path, _, node in crdfile.walk(schema)
        if node.get("x-kubernetes-validations")
        and (
            (node["type"] == "string" and "maxLength" not in node)
            or (node["type"] == "array" and "maxItems" not in node)
        )
    ]
    assert unbounded == []
    spec = schema["properties"]["spec"]
    assert spec["properties"]["targets"]["maxItems"] == 20
    assert spec["properties"]["source"]["properties"]["url"]["maxLength"] == 2048


def test_cel_rules_for_what_the_schema_cannot_say(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]

    def messages(node: dict[str, Any]) -> str:
        return " | ".join(r["message"] for r in node.get("x-kubernetes-validations", []))

    assert "unique" in messages(spec["targets"])
    assert "startFrom" in messages(spec["startFrom"])
    assert "between 100ms and 1h" in messages(spec["pollInterval"])
    assert "exactly one of basic, password or token" in messages(
        spec["source"]["properties"]["auth"]
    )
    assert "exactly one of basic, password or token" in messages(
        spec["targets"]["items"]["properties"]["auth"]
    )
    assert "exactly one of glob or regex" in messages(
        spec["assets"]["properties"]["include"]["items"]
    )
    rewrite = spec["targets"]["items"]["properties"]["rewrite"]["items"]
    assert rewrite["properties"]["match"]["minLength"] == 1
    assert spec["targets"]["x-kubernetes-list-type"] == "map"
    assert spec["targets"]["x-kubernetes-list-map-keys"] == ["name"]


def test_status_is_typed_with_operator_and_worker_fields(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]
    assert {"observedGeneration", "conditions", "source", "targets", "lagSeconds"} <= set(
        status["properties"]
    )
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in crdfile.version(crd)["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Status", "Lag", "Last Sync", "Suspended", "Age"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Status"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].message'
    # A printer column's JSONPath cannot take a maximum: the worker writes the largest.
    assert columns["Lag"]["jsonPath"] == ".status.lagSeconds"
    assert columns["Last Sync"]["jsonPath"] == ".status.source.lastPollTime"
    assert columns["Last Sync"]["type"] == "date"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert columns["Suspended"]["priority"] == 1
