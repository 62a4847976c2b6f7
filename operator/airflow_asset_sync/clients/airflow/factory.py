"""Build the right client for an endpoint: `connect` (from the spec) or `connect_url` (rig/tests).

``apiVersion: auto`` asks the server, without credentials, which API it speaks: 3.x answers
``/api/v2/version`` and ``/api/v2/monitor/health`` unauthenticated, 2.x answers
``/api/v1/version`` and ``/api/v1/health``. Only a 200 with a JSON object counts: a
single-page UI or an ingress can answer any path with 200 HTML. Probing without credentials
also means a wrong URL never receives them.

When the auth kind is not given, it follows from the credentials and the version: a token
is a bearer token; a username/password is HTTP basic for 2.x and the JWT exchange at
``/auth/token`` for 3.x (which is why auth is configured after detection).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Literal

import httpx

from airflow_asset_sync.api.spec import ApiVersion, Endpoint
from airflow_asset_sync.clients.airflow.base import BadRequest, BadResponse
from airflow_asset_sync.clients.airflow.http import (
    AirflowHttp,
    AuthKind,
    Clock,
    Credentials,
    HttpOptions,
    Sleep,
    TlsOptions,
)
from airflow_asset_sync.clients.airflow.v1 import AirflowV1Client
from airflow_asset_sync.clients.airflow.v2 import AirflowV2Client

Version = Literal["v1", "v2"]

#: What `connect` returns: either concrete client (both implement `base.AirflowClient`). The
#: union rather than the Protocol keeps `async with`, `server_version` and the id lookups
#: visible to typed callers such as rig fixtures.
AnyAirflowClient = AirflowV1Client | AirflowV2Client

#: Unauthenticated probes, in order. 3.x first: it is the version new installs run.
PROBES: tuple[tuple[Version, str], ...] = (
    ("v2", "/api/v2/version"),
    ("v2", "/api/v2/monitor/health"),
    ("v1", "/api/v1/version"),
    ("v1", "/api/v1/health"),
)


async def connect(
    endpoint: Endpoint,
    credentials: Credentials | None = None,
    *,
    ca_file: str | Path | None = None,
    options: HttpOptions | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
    rng: random.Random | None = None,
) -> AnyAirflowClient:
    """A client for a spec `Endpoint`; ``credentials`` are the values of its auth Secret.

    ``ca_file`` is the CA bundle read from ``tls.caSecretName`` (reading Secrets is not this
    module's job); it is required when the endpoint names one, so that a missing file never
    silently falls back to the system trust store.
    """
    tls = endpoint.tls
    skip_verify = bool(tls and tls.insecure_skip_verify)
    if tls and tls.ca_secret_name and ca_file is None and not skip_verify:
        raise ValueError(
            f"endpoint {endpoint.identity} names CA Secret {tls.ca_secret_name!r};"
            " pass its bundle as ca_file"
        )
    return await connect_url(
        endpoint.url,
        credentials,
        api_version=endpoint.api_version,
        auth=endpoint_auth(endpoint),
        tls=TlsOptions(ca_file=ca_file, insecure_skip_verify=skip_verify),
        options=options,
        transport=transport,
        sleep=sleep,
        clock=clock,
        rng=rng,
    )


async def connect_url(
    url: str,
    credentials: Credentials | None = None,
    *,
    api_version: ApiVersion | Literal["auto", "v1", "v2"] = "auto",
    auth: AuthKind | None = None,
    tls: TlsOptions | None = None,
    options: HttpOptions | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
    rng: random.Random | None = None,
) -> AnyAirflowClient:
    """A client from a URL and credentials (``auth`` inferred when None; see module doc)."""
    creds = credentials or Credentials()
    http = AirflowHttp(
        url,
        credentials=creds,
        options=options,
        tls=tls,
        transport=transport,
        sleep=sleep,
        clock=clock,
        rng=rng,
    )
    try:
        wanted = ApiVersion(api_version)
        server_version: str | None = None
        if wanted is ApiVersion.AUTO:
            version, server_version = await detect_api_version(http)
        else:
            version = "v1" if wanted is ApiVersion.V1 else "v2"
        http.configure_auth(
            auth if auth is not None else infer_auth(creds, version), api_version=version
        )
    except BaseException:
        await http.aclose()
        raise
    if version == "v1":
        return AirflowV1Client(http, server_version=server_version)
    return AirflowV2Client(http, server_version=server_version)


async def detect_api_version(http: AirflowHttp) -> tuple[Version, str | None]:
    """Which API the server speaks, and its version string if it told us.

    `Unavailable` if the server cannot be reached; `BadRequest` if it answers but none of
    the probes looks like Airflow (wrong URL, or a path prefix missing from it).
    """
    for version, path in PROBES:
        try:
            reply = await http.request("GET", path, authenticate=False, allow=range(300, 500))
        except BadResponse:
            continue
        if reply.status != 200 or not reply.is_json_object():
            continue
        reported = reply.json_object().get("version")
        if isinstance(reported, str) and 0 < len(reported) <= 64:
            return version, reported
        return version, None
    raise BadRequest(
        f"{http.url}: neither /api/v2 (Airflow 3) nor /api/v1 (Airflow 2) answered; is this"
        " the API server's base URL (including any path prefix)?"
    )


def endpoint_auth(endpoint: Endpoint) -> AuthKind:
    """The auth kind an `Endpoint` asks for ("none" when it has no auth block)."""
    auth = endpoint.auth
    if auth is None:
        return "none"
    if auth.basic is not None:
        return "basic"
    if auth.password is not None:
        return "password"
    return "token"


def infer_auth(credentials: Credentials, version: Version) -> AuthKind:
    """Auth kind from what was given: token -> bearer; username+password -> basic (2.x) or
    the JWT exchange (3.x); nothing -> none."""
    if credentials.token:
        return "token"
    if credentials.username and credentials.password:
        return "basic" if version == "v1" else "password"
    if credentials.username or credentials.password:
        raise ValueError("credentials need both a username and a password")
    return "none"
