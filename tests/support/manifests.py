"""The tables of AirflowAssetSync manifests in this folder, for unit and API-server tests.

`invalid_manifests.yaml` holds a valid `base` and cases built from it by a JSON merge patch
(RFC 7386), each with the substrings the API server's rejection must contain. Kept as data so
the same table drives the unit checks now and a real kube-apiserver later.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
INVALID_MANIFESTS = HERE / "invalid_manifests.yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    manifest: dict[str, Any]
    #: Substrings the API server's error message must all contain (empty for valid cases).
    expect: list[str] = field(default_factory=list)
    #: The CRD rejects it but the pydantic model would accept it.
    crd_only: bool = False


@dataclass(frozen=True, kw_only=True)
class Table:
    base: dict[str, Any]
    invalid: list[Case]
    valid: list[Case]


def _case(base: dict[str, Any], raw: dict[str, Any]) -> Case:
    manifest = merge_patch(base, raw["patch"])
    manifest["metadata"]["name"] = f"case-{raw['name']}"
    return Case(
        name=raw["name"],
        manifest=manifest,
        expect=list(raw.get("expect", [])),
        crd_only=bool(raw.get("crd_only", False)),
    )


def load(path: Path = INVALID_MANIFESTS) -> Table:
    raw = yaml.safe_load(path.read_text())
    base: dict[str, Any] = raw["base"]
    return Table(
        base=base,
        invalid=[_case(base, c) for c in raw["cases"]],
        valid=[_case(base, c) for c in raw.get("valid", [])],
    )
