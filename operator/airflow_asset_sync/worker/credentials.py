"""Turn a spec's Secret references into credential values, in a pod or on a laptop.

In a worker pod the operator delivers every referenced Secret key as an env variable (and CA
bundles as files), named by `resources.credentials`; `from_env` reads them back with the same
names, so the two sides cannot disagree. In standalone mode (`airflow-asset-sync run -f`) the
same YAML a user would `kubectl apply` may carry the Secrets too; `from_manifests` reads
those, falling back to the env names so a secret need not be written into a file.

A missing value is a `MissingCredential` naming the spec field, the Secret (and whether the
Secret itself or only its key is missing) and the env fallback, never the value of anything.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_asset_sync.api.spec import SyncSpec
from airflow_asset_sync.clients.airflow.http import Credentials
from airflow_asset_sync.resources.credentials import (
    CaBundle,
    EnvCredential,
    ca_bundles,
    env_credentials,
)
from airflow_asset_sync.resources.naming import (
    ENV_POKE_TOKEN,
    CredentialField,
    kafka_credential_env,
    source_credential_env,
    target_credential_env,
)


class MissingCredential(LookupError):
    """A referenced Secret or key is not there."""


@dataclass(frozen=True)
class KafkaCredentials:
    username: str = field(repr=False)
    password: str = field(repr=False)


@dataclass(frozen=True)
class ResolvedCredentials:
    """Everything secret a worker needs, keyed by endpoint."""

    source: Credentials
    targets: Mapping[str, Credentials]
    kafka: KafkaCredentials | None = None
    #: CA bundle file per endpoint role ("source", "target:<name>", "kafka").
    ca_files: Mapping[str, str] = field(default_factory=dict)
    #: The shared token pokes must carry (`spec.source.push`); None: pokes are refused.
    poke_token: str | None = field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for scrubbing messages."""
        out = [*self.source.secrets()]
        for creds in self.targets.values():
            out += creds.secrets()
        if self.kafka is not None:
            out += [self.kafka.username, self.kafka.password]
        if self.poke_token is not None:
            out.append(self.poke_token)
        return tuple(v for v in out if v)


Lookup = Callable[[EnvCredential], str | None]
#: What is missing when `Lookup` found nothing, for the message (never a value).
Missing = Callable[[EnvCredential], str]


def _assemble(
    spec: SyncSpec, lookup: Lookup, ca_files: Mapping[str, str], missing: Missing
) -> ResolvedCredentials:
    values: dict[str, str] = {}
    for ref in env_credentials(spec):
        value = lookup(ref)
        if value is None:
            raise MissingCredential(f"{ref.field_path}: {missing(ref)}")
        values[ref.env_name] = value

    def creds(env: Callable[[CredentialField], str]) -> Credentials:
        return Credentials(
            username=values.get(env("USERNAME")),
            password=values.get(env("PASSWORD")),
            token=values.get(env("TOKEN")),
        )

    def target_env(name: str) -> Callable[[CredentialField], str]:
        return lambda f: target_credential_env(name, f)

    kafka = None
    if kafka_credential_env("USERNAME") in values:
        kafka = KafkaCredentials(
            username=values[kafka_credential_env("USERNAME")],
            password=values[kafka_credential_env("PASSWORD")],
        )
    return ResolvedCredentials(
        source=creds(source_credential_env),
        targets={t.name: creds(target_env(t.name)) for t in spec.targets},
        kafka=kafka,
        ca_files=ca_files,
        poke_token=values.get(ENV_POKE_TOKEN),
    )


def _role(bundle: CaBundle) -> str:
    if bundle.field_path == "spec.source.tls":
        return "source"
    if bundle.field_path == "spec.kafka.security":
        return "kafka"
    return "target:" + bundle.volume_name.removeprefix("ca-target-")


def from_env(spec: SyncSpec, environ: Mapping[str, str] | None = None) -> ResolvedCredentials:
    """Worker pod: values from env, CA bundles from the files the operator mounted."""
    env = os.environ if environ is None else environ
    ca_files = {_role(b): str(Path(b.mount_dir) / "ca.crt") for b in ca_bundles(spec)}

    def missing(ref: EnvCredential) -> str:
        return (
            f"env {ref.env_name} is not set (it should hold key {ref.key!r} of Secret"
            f" {ref.secret_name!r})"
        )

    return _assemble(spec, lambda ref: env.get(ref.env_name), ca_files, missing)


def _secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    name = (secret.get("metadata") or {}).get("name", "?")
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise MissingCredential(
                f"Secret {name!r} key {key!r} is not valid base64 text"
            ) from exc
    out.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    return out


def from_manifests(
    spec: SyncSpec,
    secrets: Iterable[Mapping[str, Any]],
    environ: Mapping[str, str] | None = None,
    *,
    workdir: Path | None = None,
    where: str = "the file",
) -> ResolvedCredentials:
    """Standalone: values from Secret manifests in the same file, else from the env names.
    `where` says where those Secrets came from, in messages (`verify` reads them from the
    sync's namespace)."""
    env = os.environ if environ is None else environ
    by_name = {str((s.get("metadata") or {}).get("name")): _secret_data(s) for s in secrets}

    def lookup(ref: EnvCredential) -> str | None:
        found = by_name.get(ref.secret_name, {}).get(ref.key)
        return found if found is not None else env.get(ref.env_name)

    def absent(secret_name: str, key: str) -> str:
        if secret_name not in by_name:
            return f"Secret {secret_name!r} not found in {where}"
        return f"Secret {secret_name!r} has no key {key!r}"

    env_names: dict[str, list[str]] = {}
    for ref in env_credentials(spec):
        env_names.setdefault(ref.field_path, []).append(ref.env_name)

    def missing(ref: EnvCredential) -> str:
        text = f"{absent(ref.secret_name, ref.key)}, and env {ref.env_name} is not set"
        if ref.secret_name in by_name:
            return text
        return f"{text} (add the Secret, or set {' and '.join(env_names[ref.field_path])})"

    ca_files: dict[str, str] = {}
    for bundle in ca_bundles(spec):
        data = by_name.get(bundle.secret_name, {}).get(bundle.key)
        if data is None:
            raise MissingCredential(
                f"{bundle.field_path}: {absent(bundle.secret_name, bundle.key)}"
                f" (a CA bundle is read from {where} only)"
            )
        folder = workdir or Path(tempfile.mkdtemp(prefix="aas-ca-"))
        path = folder / f"{bundle.volume_name}.crt"
        path.write_text(data)
        ca_files[_role(bundle)] = str(path)
    return _assemble(spec, lookup, ca_files, missing)
