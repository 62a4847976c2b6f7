"""What `run` and `check` say about a bad manifest: the field by one spelling
(`spec.targets[0].auth`), a missing Secret as a missing Secret, a sync without auth warned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_asset_sync.api.spec import SyncSpec
from airflow_asset_sync.worker import app
from airflow_asset_sync.worker import credentials as creds

SYNC: dict[str, Any] = {
    "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
    "kind": "AirflowAssetSync",
    "metadata": {"name": "a-to-b"},
    "spec": {
        "source": {"url": "http://a:8080", "auth": {"basic": {"secretName": "a-creds"}}},
        "targets": [
            {"name": "b", "url": "http://b:8080", "auth": {"password": {"secretName": "b-creds"}}}
        ],
    },
}


def _secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def _with(**spec: Any) -> dict[str, Any]:
    return {**SYNC, "spec": {**SYNC["spec"], **spec}}


def _write(tmp_path: Path, *docs: dict[str, Any]) -> str:
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def test_wrong_api_version_names_the_field() -> None:
    with pytest.raises(app.BadManifest) as info:
        app.parse_sync({**SYNC, "apiVersion": "airflow-asset-sync.github.io/v1"})
    message = str(info.value)
    assert message.startswith("apiVersion: ")
    assert "airflow-asset-sync.github.io/v1alpha1" in message
    assert "Value error" not in message


def test_field_paths_are_spelled_one_way() -> None:
    target = {"name": "b", "url": "http://b:8080", "auth": {"password": {}}}
    with pytest.raises(app.BadManifest) as info:
        app.parse_sync(_with(targets=[target]))
    assert str(info.value) == "spec.targets[0].auth.password.secretName: Field required"


def test_model_rule_errors_name_the_field_without_pydantic_prefix() -> None:
    with pytest.raises(app.BadManifest) as info:
        app.parse_sync(_with(source={"url": "http://a:8080", "auth": {}}))
    assert str(info.value) == (
        "spec.source.auth: auth needs exactly one of basic, password, token; got none"
    )


def test_check_prefixes_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = {**_with(pollInterval="1d", startFrom="yesterday"), "apiVersion": "v1"}
    assert app.check(_write(tmp_path, body)) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("invalid: ") for line in lines)
    assert {line.split(":")[1].strip() for line in lines} == {
        "apiVersion",
        "spec.startFrom",
        "spec.pollInterval",
    }


def test_missing_secret_is_reported_as_missing_not_as_a_missing_key() -> None:
    spec = SyncSpec.model_validate(SYNC["spec"])
    secrets = [_secret("b-creds", username="u", password="p")]
    with pytest.raises(creds.MissingCredential) as info:
        creds.from_manifests(spec, secrets, environ={})
    message = str(info.value)
    assert message.startswith("spec.source.auth.basic: Secret 'a-creds' not found in the file")
    assert "has no key" not in message
    assert "AAS_SOURCE_USERNAME and AAS_SOURCE_PASSWORD" in message


def test_secret_without_the_key_is_reported_as_a_missing_key() -> None:
    spec = SyncSpec.model_validate(SYNC["spec"])
    secrets = [_secret("a-creds", username="u"), _secret("b-creds", username="u", password="p")]
    with pytest.raises(creds.MissingCredential) as info:
        creds.from_manifests(spec, secrets, environ={})
    assert str(info.value) == (
        "spec.source.auth.basic: Secret 'a-creds' has no key 'password',"
        " and env AAS_SOURCE_PASSWORD is not set"
    )


def test_env_fallback_replaces_a_missing_secret() -> None:
    spec = SyncSpec.model_validate(SYNC["spec"])
    environ = {
        "AAS_SOURCE_USERNAME": "u",
        "AAS_SOURCE_PASSWORD": "p",
        "AAS_TARGET_B_USERNAME": "u2",
        "AAS_TARGET_B_PASSWORD": "p2",
    }
    resolved = creds.from_manifests(spec, [], environ=environ)
    assert resolved.source.password == "p"
    assert resolved.targets["b"].password == "p2"


def test_missing_ca_secret_is_reported_as_missing() -> None:
    source = {**SYNC["spec"]["source"], "tls": {"caSecretName": "a-ca"}}
    spec = SyncSpec.model_validate({**SYNC["spec"], "source": source})
    with pytest.raises(creds.MissingCredential) as info:
        creds.from_manifests(spec, [], environ={})
    assert str(info.value).startswith("spec.source.tls: Secret 'a-ca' not found in the file")


def test_pod_env_missing_names_the_env_variable() -> None:
    spec = SyncSpec.model_validate(SYNC["spec"])
    with pytest.raises(creds.MissingCredential) as info:
        creds.from_env(spec, environ={})
    assert str(info.value).startswith("spec.source.auth.basic: env AAS_SOURCE_USERNAME is not set")


def test_no_auth_passes_check_with_a_warning_naming_the_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = _with(source={"url": "http://a:8080"})
    path = _write(tmp_path, body, _secret("b-creds", username="u", password="p"))
    assert app.check(path) == 0
    out = capsys.readouterr().out.splitlines()
    warnings = [line for line in out if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert "spec.source: no auth for http://a:8080" in warnings[0]
    assert "anonymous" in warnings[0]


def test_every_endpoint_with_auth_gives_no_warning() -> None:
    assert app.auth_warnings(SyncSpec.model_validate(SYNC["spec"])) == []
    spec = SyncSpec.model_validate(
        {**SYNC["spec"], "targets": [{"name": "b", "url": "http://b:8080"}]}
    )
    (warning,) = app.auth_warnings(spec)
    assert warning.startswith("spec.targets[0]: no auth for http://b:8080")


def test_a_secret_missing_from_the_syncs_namespace_says_where_it_was_looked_for() -> None:
    """`verify --name` reads Secrets from the sync's namespace, not from a file."""
    spec = SyncSpec.model_validate(SYNC["spec"])
    secrets = [_secret("b-creds", username="u", password="p")]
    with pytest.raises(creds.MissingCredential) as info:
        creds.from_manifests(spec, secrets, environ={}, where="namespace 'data'")
    assert str(info.value).startswith(
        "spec.source.auth.basic: Secret 'a-creds' not found in namespace 'data'"
    )


def test_verify_without_a_file_or_a_sync_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.verify_sync(since="1h", until=None, as_json=False) == 2
    assert "verify needs a file (-f) or a sync in a cluster (--name)" in capsys.readouterr().err


def test_verify_with_a_window_not_in_the_past_touches_no_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The endpoints do not exist: any request would fail with another message than this one.
    file = _write(
        tmp_path,
        SYNC,
        _secret("a-creds", username="u", password="p"),
        _secret("b-creds", username="u", password="p"),
    )
    assert app.verify_sync(file, since="2099-01-01T00:00:00Z", until=None, as_json=True) == 2
    assert "invalid: --since '2099-01-01T00:00:00Z' is not in the past" in capsys.readouterr().err
