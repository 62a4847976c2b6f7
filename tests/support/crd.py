"""Reading the CRD in tests: load it and walk its schema nodes with their paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "airflowassetsync.yaml"
SAMPLES_DIR = ROOT / "crds" / "samples"

Schema = dict[str, Any]


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions: list[dict[str, Any]] = crd["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def root_schema(crd: dict[str, Any]) -> Schema:
    schema: Schema = version(crd)["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, str, Schema]]:
    """Yield (path, how it was reached: property | items | additionalProperties, node)."""
    for name, sub in (schema.get("properties") or {}).items():
        sub_path = f"{path}.{name}" if path else name
        yield sub_path, "property", sub
        yield from walk(sub, sub_path)
    if isinstance(schema.get("items"), dict):
        yield f"{path}[]", "items", schema["items"]
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{path}.*", "additionalProperties", schema["additionalProperties"]
        yield from walk(schema["additionalProperties"], f"{path}.*")


def load_samples() -> dict[str, list[dict[str, Any]]]:
    """Sample file name -> its YAML documents."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(SAMPLES_DIR.glob("*.yaml"))
    }
