"""The table of invalid manifests (run against a real API server later) is well formed.

Here, without an API server: every case is a real change to a valid base, names the field it
is about, and agrees with the pydantic model, which must reject every case except those
marked `crd_only` (rules only the CRD states) and accept every `valid` edge case.
"""

from __future__ import annotations

import pydantic
import pytest

from airflow_asset_sync.api import spec as api
from support import manifests

TABLE = manifests.load()


def _model_accepts(manifest: dict[str, object]) -> bool:
    try:
        api.SyncObject.model_validate(manifest)
    except pydantic.ValidationError:
        return False
    return True


def test_table_has_at_least_25_distinct_cases() -> None:
    names = [c.name for c in TABLE.invalid]
    assert len(names) >= 25
    assert len(set(names)) == len(names)
    assert len({c.name for c in TABLE.valid}) == len(TABLE.valid)


def test_base_is_valid() -> None:
    assert _model_accepts(TABLE.base)


@pytest.mark.parametrize("case", TABLE.invalid, ids=lambda c: c.name)
def test_invalid_case_is_well_formed(case: manifests.Case) -> None:
    assert case.manifest["spec"] != TABLE.base["spec"]
    assert case.expect, "a case must say what the API server's message contains"
    assert case.expect[0].startswith("spec"), "the first expected substring is the field path"
    assert case.manifest["metadata"]["name"] == f"case-{case.name}"


@pytest.mark.parametrize("case", TABLE.invalid, ids=lambda c: c.name)
def test_model_agrees_with_the_crd(case: manifests.Case) -> None:
    assert _model_accepts(case.manifest) is case.crd_only


@pytest.mark.parametrize("case", TABLE.valid, ids=lambda c: c.name)
def test_valid_edge_case_is_accepted_by_the_model(case: manifests.Case) -> None:
    assert _model_accepts(case.manifest)


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    patch = {"a": {"b": None, "c": [3]}, "e": {"f": None}}
    assert manifests.merge_patch(target, patch) == {"a": {"c": [3]}, "d": 1, "e": {}}
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1}
