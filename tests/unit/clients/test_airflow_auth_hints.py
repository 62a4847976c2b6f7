"""An auth kind that does not fit the Airflow version says which one does: `basic` against
Airflow 3 (bearer tokens only) and `password` against 2.x (no /auth/token)."""

from __future__ import annotations

import httpx
import pytest

from airflow_asset_sync.api.spec import Endpoint
from airflow_asset_sync.clients.airflow.base import AuthFailed, EventQuery
from airflow_asset_sync.clients.airflow.factory import connect
from airflow_asset_sync.clients.airflow.http import AirflowHttp, Credentials

URL = "http://airflow.test:8080"
PASSWORD = "pw-Hint-Secret-9"
CREDS = Credentials(username="admin", password=PASSWORD)


def airflow(major: int, *, token_answer: httpx.Response | None = None) -> httpx.MockTransport:
    """Version probes answer unauthenticated; everything else refuses what is not a JWT."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        api = "/api/v2" if major == 3 else "/api/v1"
        if path == f"{api}/version":
            return httpx.Response(200, json={"version": "3.3.2" if major == 3 else "2.11.2"})
        if path == "/auth/token":
            if major == 3:
                return httpx.Response(201, json={"access_token": "a.b.c"})
            return token_answer or httpx.Response(404, text="<html>Not Found</html>")
        if path.startswith(api):
            if major == 3:
                return httpx.Response(401, json={"detail": "Not authenticated"})
            return httpx.Response(403, json={"status": 403, "title": "Forbidden"})
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(handler)


def endpoint(auth: dict[str, object]) -> Endpoint:
    return Endpoint.model_validate({"url": URL, "auth": auth})


async def _list(endpoint: Endpoint, transport: httpx.MockTransport) -> AuthFailed:
    client = await connect(endpoint, CREDS, transport=transport)
    async with client:
        with pytest.raises(AuthFailed) as info:
            await client.list_events(EventQuery(limit=1))
    assert PASSWORD not in str(info.value)
    return info.value


async def test_basic_against_airflow_3_says_use_password() -> None:
    error = await _list(endpoint({"basic": {"secretName": "s"}}), airflow(3))
    message = str(error)
    assert "HTTP 401" in message
    assert "use auth 'password'" in message
    assert "/auth/token" in message
    assert "'basic' is for Airflow 2.x with the basic_auth API backend" in message


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(404, text="<html>Not Found</html>"),
        httpx.Response(405),
        httpx.Response(400, text="The CSRF token is missing."),
        httpx.Response(302, headers={"location": "/login/"}),
    ],
)
async def test_password_against_airflow_2_says_use_basic(answer: httpx.Response) -> None:
    error = await _list(
        endpoint({"password": {"secretName": "s"}}), airflow(2, token_answer=answer)
    )
    message = str(error)
    assert "/auth/token" in message
    assert "use auth 'basic'" in message
    assert "basic_auth API backend" in message


async def test_basic_against_airflow_2_keeps_the_credentials_hint() -> None:
    error = await _list(endpoint({"basic": {"secretName": "s"}}), airflow(2))
    message = str(error)
    assert "check the credentials" in message
    assert "'password'" not in message


async def test_no_auth_refused_says_so() -> None:
    client = await connect(Endpoint.model_validate({"url": URL}), transport=airflow(3))
    async with client:
        with pytest.raises(AuthFailed, match="no auth is configured"):
            await client.list_events(EventQuery(limit=1))


async def test_basic_on_an_api_v2_path_is_hinted_without_detection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "Not authenticated"})

    async with AirflowHttp(
        URL, credentials=CREDS, auth="basic", transport=httpx.MockTransport(handler)
    ) as http:
        with pytest.raises(AuthFailed, match="use auth 'password'"):
            await http.request("GET", "/api/v2/assets/events")
