"""The samples in crds/samples/ are valid, self-contained, and cover the whole spec."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.resources import credentials
from support import crd as crdfile

SAMPLES = crdfile.load_samples()


def _syncs(docs: list[dict[str, Any]]) -> list[api.SyncObject]:
    return [api.SyncObject.model_validate(d) for d in docs if d["kind"] == api.KIND]


def test_the_expected_samples_exist() -> None:
    assert set(SAMPLES) == {
        "minimal.yaml",
        "full.yaml",
        "bidirectional.yaml",
        "migration-2to3.yaml",
    }


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_validates_against_the_model(name: str) -> None:
    assert _syncs(SAMPLES[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_ships_every_secret_and_key_it_references(name: str) -> None:
    docs = SAMPLES[name]
    secrets = {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for d in docs
        if d["kind"] == "Secret"
    }
    for sync in _syncs(docs):
        for use in credentials.secret_key_uses(sync.spec):
            assert use.secret_name in secrets, use
            assert use.key in secrets[use.secret_name], use


def _paths(value: Any, path: str = "spec") -> set[str]:
    """Property paths present in a spec, with list items as `[]` (like crdfile.walk)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for key, sub in value.items():
            out.add(f"{path}.{key}")
            out |= _paths(sub, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            out |= _paths(item, f"{path}[]")
    return out


def _endpoint(path: str) -> str:
    """Source and targets share the endpoint fields, and auth kinds exclude each other, so
    coverage of an endpoint field counts on the source or on any target."""
    for prefix in ("spec.source.", "spec.targets[]."):
        if path.startswith(prefix):
            return "endpoint." + path.removeprefix(prefix)
    return path


def test_full_sample_sets_every_spec_field() -> None:
    schema = crdfile.root_schema(crdfile.load_crd())
    every = {
        _endpoint(path)
        for path, how, _ in crdfile.walk(schema)
        if how == "property" and path.startswith("spec.")
    }
    docs = [d for d in SAMPLES["full.yaml"] if d["kind"] == api.KIND]
    used = {_endpoint(p) for d in docs for p in _paths(d["spec"])}
    assert every - used == set()


def test_bidirectional_sample_is_two_mirrored_syncs() -> None:
    first, second = _syncs(SAMPLES["bidirectional.yaml"])
    assert first.spec.source.identity == second.spec.targets[0].identity
    assert second.spec.source.identity == first.spec.targets[0].identity
    assert first.spec.source.url == second.spec.targets[0].url
    assert second.spec.source.url == first.spec.targets[0].url


def test_migration_sample_goes_from_airflow_2_to_3_with_rewrites_and_retry() -> None:
    (sync,) = _syncs(SAMPLES["migration-2to3.yaml"])
    (target,) = sync.spec.targets
    assert sync.spec.source.api_version == api.ApiVersion.V1
    assert target.api_version == api.ApiVersion.V2
    assert target.on_unknown_asset == api.UnknownAssetPolicy.RETRY
    assert target.map_uri("s3://airflow2-data/x/y") == "s3://airflow3-data/x/y"
    assert target.map_uri("dataset://orders") == "asset://orders"
