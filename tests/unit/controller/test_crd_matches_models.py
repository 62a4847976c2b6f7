"""The CRD schema and the pydantic models describe the same fields, recursively.

Drift either way is a bug: a CRD field the model lacks is rejected by the model
(`extra="forbid"`) after the API server accepted it; a model field the CRD lacks is pruned by
the API server, so the user's setting silently vanishes. For status, a worker field missing
from the CRD would be pruned from every status patch.
"""

from __future__ import annotations

import datetime
import enum
import types
import typing
from typing import Any

import pydantic
import pytest

from airflow_asset_sync.api import spec as api_spec
from airflow_asset_sync.api import status as api_status
from support import crd as crdfile


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        assert len(args) == 1, f"unexpected union {tp}"
        return args[0]
    return tp


def _compare_type(tp: Any, schema: dict[str, Any], path: str, problems: list[str]) -> None:
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    kind = schema.get("type")
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        if kind != "object":
            problems.append(f"{path}: model {tp.__name__} but CRD type {kind}")
        else:
            _compare_model(tp, schema, path, problems)
    elif origin is list:
        if kind != "array":
            problems.append(f"{path}: list but CRD type {kind}")
        else:
            _compare_type(typing.get_args(tp)[0], schema["items"], f"{path}[]", problems)
    elif origin is dict:
        if kind != "object":
            problems.append(f"{path}: dict but CRD type {kind}")
    elif origin is typing.Literal:
        if sorted(typing.get_args(tp)) != sorted(schema.get("enum", [])):
            problems.append(f"{path}: Literal {typing.get_args(tp)} vs enum {schema.get('enum')}")
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        if sorted(m.value for m in tp) != sorted(schema.get("enum", [])):
            problems.append(f"{path}: {tp.__name__} values vs enum {schema.get('enum')}")
    elif tp is datetime.datetime:
        if kind != "string" or schema.get("format") != "date-time":
            problems.append(f"{path}: datetime but CRD {kind}/{schema.get('format')}")
    else:
        expected = {str: "string", bool: "boolean", int: "integer", float: "number"}.get(tp)
        if expected is None:
            problems.append(f"{path}: no CRD mapping for {tp!r}")
        elif kind != expected:
            problems.append(f"{path}: {tp.__name__} but CRD type {kind}")


def _compare_model(
    model: type[pydantic.BaseModel], schema: dict[str, Any], path: str, problems: list[str]
) -> None:
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    props = schema.get("properties", {})
    for name in sorted(set(fields) - set(props)):
        problems.append(f"{path}.{name}: in {model.__name__} but not in the CRD")
    for name in sorted(set(props) - set(fields)):
        problems.append(f"{path}.{name}: in the CRD but not in {model.__name__}")
    required_model = {alias for alias, info in fields.items() if info.is_required()}
    required_crd = set(schema.get("required", []))
    if required_model != required_crd:
        problems.append(
            f"{path}: required {sorted(required_crd)} != model {sorted(required_model)}"
        )
    for name in sorted(set(fields) & set(props)):
        _compare_type(fields[name].annotation, props[name], f"{path}.{name}", problems)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return crdfile.root_schema(crdfile.load_crd())


def test_spec_matches_sync_spec_model(schema: dict[str, Any]) -> None:
    problems: list[str] = []
    _compare_model(api_spec.SyncSpec, schema["properties"]["spec"], "spec", problems)
    assert problems == []


def test_status_matches_status_models(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]
    problems: list[str] = []
    operator_fields = {"observedGeneration", "conditions", "pokeUrl", "lastHandledConfiguration"}
    worker_props = {k: v for k, v in status["properties"].items() if k not in operator_fields}
    _compare_model(api_status.WorkerStatus, {"properties": worker_props}, "status", problems)
    _compare_type(
        int, status["properties"]["observedGeneration"], "status.observedGeneration", problems
    )
    _compare_type(str, status["properties"]["pokeUrl"], "status.pokeUrl", problems)
    last = status["properties"]["lastHandledConfiguration"]
    _compare_type(str, last, "status.lastHandledConfiguration", problems)
    _compare_type(
        api_status.Condition,
        status["properties"]["conditions"]["items"],
        "status.conditions[]",
        problems,
    )
    assert problems == []


def test_status_caps_match_the_model_constants(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]["properties"]
    seen = status["source"]["properties"]["checkpoint"]["properties"]["seenIds"]
    unknown = status["targets"]["items"]["properties"]["unknownAssets"]
    assert seen["maxItems"] == api_status.MAX_SEEN_IDS
    assert unknown["maxItems"] == api_status.MAX_UNKNOWN_ASSETS


def test_comparison_catches_drift() -> None:
    """The checker itself: a renamed field and a wrong type are both reported."""

    class Tiny(api_spec.Model):
        poll_interval: str = "1s"
        suspend: bool = False

    problems: list[str] = []
    schema = {
        "type": "object",
        "properties": {"pollIntervall": {"type": "string"}, "suspend": {"type": "string"}},
    }
    _compare_model(Tiny, schema, "spec", problems)
    assert problems == [
        "spec.pollInterval: in Tiny but not in the CRD",
        "spec.pollIntervall: in the CRD but not in Tiny",
        "spec.suspend: bool but CRD type string",
    ]
