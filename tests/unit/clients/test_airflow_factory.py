"""connect()/connect_url(): version auto-detection, auth inference, Endpoint mapping."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from airflow_asset_sync.api.spec import Endpoint
from airflow_asset_sync.clients.airflow.base import BadRequest, EventQuery, Unavailable
from airflow_asset_sync.clients.airflow.factory import connect, connect_url
from airflow_asset_sync.clients.airflow.http import Credentials, HttpOptions
from airflow_asset_sync.clients.airflow.v1 import AirflowV1Client
from airflow_asset_sync.clients.airflow.v2 import AirflowV2Client

URL = "http://airflow.test:8080"
PASSWORD = "adminpw-secret"
TOKEN = "eyJhbGciOiJIUzUxMiJ9.e30.sig"


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Server:
    """An Airflow of a given major version; other paths 404 like the real thing."""

    def __init__(self, major: int, *, prefix: str = "") -> None:
        self.major = major
        self.prefix = prefix
        self.requests: list[httpx.Request] = []
        self.extra: dict[str, Callable[[httpx.Request], httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix(self.prefix)
        if path in self.extra:
            return self.extra[path](request)
        api = "/api/v2" if self.major == 3 else "/api/v1"
        version = "3.3.2" if self.major == 3 else "2.11.2"
        health = "/api/v2/monitor/health" if self.major == 3 else "/api/v1/health"
        if path == f"{api}/version":
            return httpx.Response(200, json={"version": version, "git_version": None})
        if path == health:
            return httpx.Response(200, json={"metadatabase": {"status": "healthy"}})
        if path == "/auth/token" and self.major == 3:
            return httpx.Response(201, json={"access_token": TOKEN})
        if path in ("/api/v2/assets/events", "/api/v1/datasets/events"):
            key = "asset_events" if self.major == 3 else "dataset_events"
            return httpx.Response(200, json={key: [], "total_entries": 0})
        return httpx.Response(404, json={"detail": "Not Found"})

    @property
    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def transport(server: Server) -> httpx.MockTransport:
    return httpx.MockTransport(server)


async def test_auto_detects_airflow_3_without_sending_credentials() -> None:
    server = Server(3)
    creds = Credentials(username="admin", password=PASSWORD)
    api = await connect_url(URL, creds, transport=transport(server))
    async with api:
        assert isinstance(api, AirflowV2Client)
        assert api.api_version == "v2"
        assert api.server_version == "3.3.2"
        assert server.paths == ["/api/v2/version"]
        assert server.requests[0].headers.get("authorization") is None
        await api.list_events(EventQuery())
    # username/password on 3.x means the JWT exchange
    assert server.paths[1:] == ["/auth/token", "/api/v2/assets/events"]
    assert json.loads(server.requests[1].content) == {"username": "admin", "password": PASSWORD}
    assert server.requests[2].headers["authorization"] == f"Bearer {TOKEN}"


async def test_auto_detects_airflow_2_and_uses_basic_auth() -> None:
    server = Server(2)
    creds = Credentials(username="admin", password=PASSWORD)
    api = await connect_url(URL, creds, transport=transport(server))
    async with api:
        assert isinstance(api, AirflowV1Client)
        assert api.server_version == "2.11.2"
        await api.list_events(EventQuery())
    assert server.paths == [
        "/api/v2/version",
        "/api/v2/monitor/health",
        "/api/v1/version",
        "/api/v1/datasets/events",
    ]
    assert all(r.headers.get("authorization") is None for r in server.requests[:3])
    assert server.requests[3].headers["authorization"].startswith("Basic ")


async def test_html_200_from_a_catch_all_does_not_count_as_an_answer() -> None:
    server = Server(2)
    for path in ("/api/v2/version", "/api/v2/monitor/health"):
        server.extra[path] = lambda r: httpx.Response(200, html="<html>SPA</html>")
    api = await connect_url(URL, transport=transport(server))
    async with api:
        assert api.api_version == "v1"


async def test_health_is_a_fallback_when_version_is_missing() -> None:
    server = Server(3)
    server.extra["/api/v2/version"] = lambda r: httpx.Response(404, json={"detail": "x"})
    api = await connect_url(URL, transport=transport(server))
    async with api:
        assert api.api_version == "v2"
        assert isinstance(api, AirflowV2Client)
        assert api.server_version is None
    assert server.paths == ["/api/v2/version", "/api/v2/monitor/health"]


async def test_nothing_airflow_like_is_bad_request() -> None:
    server = Server(2)
    server.extra["/api/v1/version"] = lambda r: httpx.Response(404, html="<html/>")
    server.extra["/api/v1/health"] = lambda r: httpx.Response(404, html="<html/>")
    with pytest.raises(BadRequest, match="neither /api/v2"):
        await connect_url(URL, transport=transport(server))
    assert len(server.requests) == 4


async def test_unreachable_server_is_unavailable_after_bounded_retries() -> None:
    attempts: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    sleep = RecordingSleep()
    with pytest.raises(Unavailable):
        await connect_url(
            URL,
            transport=httpx.MockTransport(refuse),
            options=HttpOptions(max_attempts=3),
            sleep=sleep,
            rng=random.Random(1),
        )
    assert attempts == ["/api/v2/version"] * 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(("version", "cls"), [("v1", AirflowV1Client), ("v2", AirflowV2Client)])
async def test_explicit_version_does_not_probe(version: str, cls: type) -> None:
    server = Server(3)
    api = await connect_url(
        URL,
        Credentials(token=TOKEN),
        api_version=version,  # type: ignore[arg-type]
        transport=transport(server),
    )
    async with api:
        assert isinstance(api, cls)
    assert server.requests == []


async def test_token_credentials_become_a_bearer_header() -> None:
    server = Server(3)
    api = await connect_url(URL, Credentials(token=TOKEN), transport=transport(server))
    async with api:
        await api.list_events(EventQuery())
    assert "/auth/token" not in server.paths
    assert server.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


async def test_half_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="both a username and a password"):
        await connect_url(
            URL, Credentials(username="admin"), api_version="v1", transport=transport(Server(2))
        )


async def test_path_prefix_is_honoured_by_probes_and_calls() -> None:
    server = Server(3, prefix="/airflow")
    api = await connect_url(
        f"{URL}/airflow/", Credentials(token=TOKEN), transport=transport(server)
    )
    async with api:
        await api.list_events(EventQuery())
    assert server.paths == ["/airflow/api/v2/version", "/airflow/api/v2/assets/events"]


# -- connect(Endpoint) -------------------------------------------------------------------------


def endpoint(**spec: object) -> Endpoint:
    return Endpoint.model_validate({"url": URL, **spec})


async def test_endpoint_basic_auth_is_used_as_declared() -> None:
    server = Server(2)
    ep = endpoint(apiVersion="v1", auth={"basic": {"secretName": "airflow2"}})
    api = await connect(
        ep, Credentials(username="admin", password=PASSWORD), transport=transport(server)
    )
    async with api:
        await api.list_events(EventQuery())
    assert server.requests[-1].headers["authorization"].startswith("Basic ")


async def test_endpoint_password_auth_on_auto_detected_3x() -> None:
    server = Server(3)
    ep = endpoint(auth={"password": {"secretName": "airflow3"}})
    api = await connect(
        ep, Credentials(username="admin", password=PASSWORD), transport=transport(server)
    )
    async with api:
        await api.list_events(EventQuery())
    assert server.paths == ["/api/v2/version", "/auth/token", "/api/v2/assets/events"]


async def test_endpoint_without_auth_sends_none_even_if_credentials_exist() -> None:
    server = Server(3)
    api = await connect(endpoint(), Credentials(token=TOKEN), transport=transport(server))
    async with api:
        await api.list_events(EventQuery())
    assert server.requests[-1].headers.get("authorization") is None


async def test_endpoint_auth_without_matching_credentials_is_refused() -> None:
    ep = endpoint(apiVersion="v2", auth={"token": {"secretName": "t"}})
    with pytest.raises(ValueError, match="needs a token"):
        await connect(ep, Credentials(username="admin", password=PASSWORD))


async def test_endpoint_ca_secret_requires_a_ca_file() -> None:
    ep = endpoint(apiVersion="v2", tls={"caSecretName": "airflow-ca"})
    with pytest.raises(ValueError, match="airflow-ca"):
        await connect(ep)


async def test_endpoint_ca_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    ep = endpoint(apiVersion="v2", tls={"caSecretName": "airflow-ca"})
    with pytest.raises(ValueError, match="cannot be loaded"):
        await connect(ep, ca_file=tmp_path / "missing.crt")


async def test_endpoint_skip_verify_needs_no_ca_file() -> None:
    ep = endpoint(apiVersion="v2", tls={"caSecretName": "airflow-ca", "insecureSkipVerify": True})
    api = await connect(ep, transport=transport(Server(3)))
    async with api:
        assert api.api_version == "v2"
