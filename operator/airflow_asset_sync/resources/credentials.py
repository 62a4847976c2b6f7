"""Every Secret key a spec references, and what it becomes in the worker pod.

One list serves two readers: the Deployment builder turns it into env `secretKeyRef`s and
read-only volumes, and the reconciler checks that each Secret and key exists before it rolls
a worker that would otherwise sit in `CreateContainerConfigError`. Keeping both on one list
means a reference cannot be mounted without also being checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from airflow_asset_sync.api.spec import Auth, SyncSpec
from airflow_asset_sync.resources.naming import (
    ENV_POKE_TOKEN,
    CredentialField,
    kafka_ca_dir,
    kafka_credential_env,
    source_ca_dir,
    source_credential_env,
    target_ca_dir,
    target_credential_env,
)


@dataclass(frozen=True, kw_only=True)
class EnvCredential:
    """One Secret key delivered to the worker as an env variable."""

    env_name: str
    secret_name: str
    key: str
    #: Where in the spec the reference is, for messages (`spec.targets[0].auth.basic`).
    field_path: str


@dataclass(frozen=True, kw_only=True)
class CaBundle:
    """One Secret key delivered to the worker as a read-only file (`<mount_dir>/ca.crt`)."""

    volume_name: str
    mount_dir: str
    secret_name: str
    key: str
    field_path: str


EnvNamer = Callable[[CredentialField], str]


def _target_env(target_name: str) -> EnvNamer:
    return lambda field: target_credential_env(target_name, field)


def _auth_env(auth: Auth | None, *, field_path: str, env: EnvNamer) -> list[EnvCredential]:
    if auth is None:
        return []
    out: list[EnvCredential] = []
    for kind, ref in (("basic", auth.basic), ("password", auth.password)):
        if ref is not None:
            path = f"{field_path}.auth.{kind}"
            out.append(
                EnvCredential(
                    env_name=env("USERNAME"),
                    secret_name=ref.secret_name,
                    key=ref.username_key,
                    field_path=path,
                )
            )
            out.append(
                EnvCredential(
                    env_name=env("PASSWORD"),
                    secret_name=ref.secret_name,
                    key=ref.password_key,
                    field_path=path,
                )
            )
    if auth.token is not None:
        out.append(
            EnvCredential(
                env_name=env("TOKEN"),
                secret_name=auth.token.secret_name,
                key=auth.token.key,
                field_path=f"{field_path}.auth.token",
            )
        )
    return out


def env_credentials(spec: SyncSpec) -> list[EnvCredential]:
    """Credentials as env variables, in a stable order (source, targets in order, the poke
    token, Kafka)."""
    out = _auth_env(spec.source.auth, field_path="spec.source", env=source_credential_env)
    for index, target in enumerate(spec.targets):
        out += _auth_env(
            target.auth, field_path=f"spec.targets[{index}]", env=_target_env(target.name)
        )
    push = spec.source.push
    if push is not None:
        out.append(
            EnvCredential(
                env_name=ENV_POKE_TOKEN,
                secret_name=push.token.secret_name,
                key=push.token.key,
                field_path="spec.source.push.token",
            )
        )
    sasl = spec.kafka.security.sasl if spec.kafka and spec.kafka.security else None
    if sasl is not None:
        path = "spec.kafka.security.sasl"
        out.append(
            EnvCredential(
                env_name=kafka_credential_env("USERNAME"),
                secret_name=sasl.secret_name,
                key=sasl.username_key,
                field_path=path,
            )
        )
        out.append(
            EnvCredential(
                env_name=kafka_credential_env("PASSWORD"),
                secret_name=sasl.secret_name,
                key=sasl.password_key,
                field_path=path,
            )
        )
    return out


def ca_bundles(spec: SyncSpec) -> list[CaBundle]:
    """CA bundles to mount, in a stable order (source, targets in order, Kafka)."""
    out: list[CaBundle] = []
    tls = spec.source.tls
    if tls is not None and tls.ca_secret_name:
        out.append(
            CaBundle(
                volume_name="ca-source",
                mount_dir=source_ca_dir(),
                secret_name=tls.ca_secret_name,
                key=tls.ca_key,
                field_path="spec.source.tls",
            )
        )
    for index, target in enumerate(spec.targets):
        tls = target.tls
        if tls is not None and tls.ca_secret_name:
            out.append(
                CaBundle(
                    # Target names are at most 40 characters: this stays a DNS label.
                    volume_name=f"ca-target-{target.name}",
                    mount_dir=target_ca_dir(target.name),
                    secret_name=tls.ca_secret_name,
                    key=tls.ca_key,
                    field_path=f"spec.targets[{index}].tls",
                )
            )
    security = spec.kafka.security if spec.kafka else None
    if security is not None and security.ca_secret_name:
        out.append(
            CaBundle(
                volume_name="ca-kafka",
                mount_dir=kafka_ca_dir(),
                secret_name=security.ca_secret_name,
                key=security.ca_key,
                field_path="spec.kafka.security",
            )
        )
    return out


@dataclass(frozen=True, kw_only=True)
class SecretKeyUse:
    """A (Secret, key) pair the worker needs, whatever way it is delivered."""

    secret_name: str
    key: str
    field_path: str


def secret_key_uses(spec: SyncSpec) -> list[SecretKeyUse]:
    """All Secret keys the spec references, env and files alike, without repeats."""
    seen: dict[tuple[str, str], SecretKeyUse] = {}
    refs: list[EnvCredential | CaBundle] = [*env_credentials(spec), *ca_bundles(spec)]
    for ref in refs:
        use = SecretKeyUse(secret_name=ref.secret_name, key=ref.key, field_path=ref.field_path)
        seen.setdefault((use.secret_name, use.key), use)
    return list(seen.values())


def secret_names(spec: SyncSpec) -> list[str]:
    """The Secrets the spec references, sorted (the order of the secrets-hash input)."""
    return sorted({use.secret_name for use in secret_key_uses(spec)})
