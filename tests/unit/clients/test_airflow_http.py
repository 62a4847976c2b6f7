"""AirflowHttp: auth kinds, token lifecycle, retries/backoff, write bound, error mapping, secrecy.

Everything runs against httpx.MockTransport; the backoff sleep is a recording fake, so no
test waits for real time.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import random
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_asset_sync.clients.airflow.base import (
    AirflowError,
    AssetNotFound,
    AuthFailed,
    BadRequest,
    BadResponse,
    TlsFailed,
    Unavailable,
    WriteOutcomeUnknown,
)
from airflow_asset_sync.clients.airflow.http import (
    AirflowHttp,
    AuthKind,
    Credentials,
    HttpOptions,
    TlsOptions,
    jwt_expiry,
    not_found,
    redact_url,
)

URL = "http://airflow.test:8080"
PASSWORD = "pw-Very-Secret-1"
TOKEN = "static-Token-Secret-2"
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]
)


class RecordingSleep:
    """Stands in for asyncio.sleep: records delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class CeilingRandom(random.Random):
    """Always picks the top of the jitter range, making the backoff ceiling observable."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_jwt(exp: float | None, *, sub: str = "admin") -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims: dict[str, Any] = {"sub": sub}
    if exp is not None:
        claims["exp"] = exp
    return f"{b64({'alg': 'HS512', 'kid': 'not-used'})}.{b64(claims)}.c2lnbmF0dXJl"


def make_http(
    handler: Handler,
    *,
    auth: AuthKind = "none",
    credentials: Credentials | None = None,
    options: HttpOptions | None = None,
    sleep: RecordingSleep | None = None,
    clock: FakeClock | None = None,
    rng: random.Random | None = None,
    url: str = URL,
) -> AirflowHttp:
    return AirflowHttp(
        url,
        auth=auth,
        credentials=credentials,
        options=options,
        transport=httpx.MockTransport(handler),
        sleep=sleep or RecordingSleep(),
        clock=clock or FakeClock(1_000_000.0),
        rng=rng or random.Random(7),
    )


def ok(body: object = None) -> httpx.Response:
    return httpx.Response(200, json=body if body is not None else {"ok": True})


def all_text(exc: BaseException) -> str:
    """Everything an operator could see of an exception chain: str and repr of each link."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# -- auth kinds -------------------------------------------------------------------------------


async def test_basic_auth_sends_the_encoded_pair() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return ok()

    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(handler, auth="basic", credentials=creds) as http:
        await http.request("GET", "/api/v1/datasets/events")
    expected = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    assert seen == [f"Basic {expected}"]


async def test_static_token_is_sent_as_bearer() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return ok()

    async with make_http(handler, auth="token", credentials=Credentials(token=TOKEN)) as http:
        await http.request("GET", "/api/v2/assets/events")
    assert seen == [f"Bearer {TOKEN}"]


async def test_no_auth_sends_no_authorization_header() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return ok()

    async with make_http(handler) as http:
        await http.request("GET", "/api/v2/version")
    assert seen == [None]


async def test_unauthenticated_request_skips_credentials_even_if_configured() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return ok()

    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(handler, auth="basic", credentials=creds) as http:
        await http.request("GET", "/api/v1/health", authenticate=False)
    assert seen == [None]


@pytest.mark.parametrize(
    ("auth", "creds"),
    [
        ("basic", Credentials(username="admin")),
        ("password", Credentials(password=PASSWORD)),
        ("token", Credentials(username="admin", password=PASSWORD)),
    ],
)
def test_missing_credentials_for_auth_kind_is_refused(auth: AuthKind, creds: Credentials) -> None:
    with pytest.raises(ValueError, match=auth) as info:
        make_http(lambda r: ok(), auth=auth, credentials=creds)
    assert PASSWORD not in str(info.value)


# -- JWT exchange -----------------------------------------------------------------------------


class TokenServer:
    """A 3.x-like server: /auth/token issues numbered JWTs; the API accepts only `valid`."""

    def __init__(self, *, exp: float | None = None) -> None:
        self.exp = exp
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self.login_bodies: list[dict[str, Any]] = []
        self.api_auth: list[str | None] = []

    def issue(self) -> str:
        token = make_jwt(self.exp, sub=f"admin-{len(self.issued)}")
        self.issued.append(token)
        self.valid.add(token)
        return token

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            assert request.method == "POST"
            assert request.headers["content-type"] == "application/json"
            self.login_bodies.append(json.loads(request.content))
            return httpx.Response(201, json={"access_token": self.issue()})
        header = request.headers.get("authorization")
        self.api_auth.append(header)
        if header is None or header.removeprefix("Bearer ") not in self.valid:
            return httpx.Response(401, json={"detail": "Not authenticated"})
        return ok()


async def test_password_auth_exchanges_credentials_for_a_jwt_once() -> None:
    server = TokenServer()
    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(server, auth="password", credentials=creds) as http:
        await http.request("GET", "/api/v2/assets/events")
        await http.request("GET", "/api/v2/assets/events")
    assert server.login_bodies == [{"username": "admin", "password": PASSWORD}]
    assert server.api_auth == [f"Bearer {server.issued[0]}"] * 2


async def test_expired_token_on_401_triggers_one_relogin_and_the_request_is_repeated() -> None:
    server = TokenServer()
    creds = Credentials(username="admin", password=PASSWORD)
    sleep = RecordingSleep()
    async with make_http(server, auth="password", credentials=creds, sleep=sleep) as http:
        await http.request("GET", "/api/v2/assets/events")
        server.valid.clear()  # the server forgets/expires the first token
        reply = await http.request("GET", "/api/v2/assets/events")
    assert reply.status == 200
    assert len(server.issued) == 2
    assert server.api_auth[-2:] == [f"Bearer {server.issued[0]}", f"Bearer {server.issued[1]}"]
    assert sleep.delays == []  # a re-login is not a retry with backoff


async def test_persistent_401_after_relogin_is_auth_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": make_jwt(None)})
        return httpx.Response(401, json={"detail": "Not authenticated"})

    creds = Credentials(username="admin", password=PASSWORD)
    calls: list[str] = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return handler(request)

    async with make_http(counting, auth="password", credentials=creds) as http:
        with pytest.raises(AuthFailed):
            await http.request("GET", "/api/v2/assets/events")
    assert calls == ["/auth/token", "/api/v2/assets/events"] * 2


async def test_token_is_refreshed_before_its_exp_without_waiting_for_a_401() -> None:
    clock = FakeClock(1_000_000.0)
    server = TokenServer(exp=clock.now + 3600)
    creds = Credentials(username="admin", password=PASSWORD)
    options = HttpOptions(token_refresh_margin_s=60)
    async with make_http(
        server, auth="password", credentials=creds, clock=clock, options=options
    ) as http:
        await http.request("GET", "/x")
        clock.now += 3000  # still well before exp - margin
        await http.request("GET", "/x")
        assert len(server.issued) == 1
        server.exp = clock.now + 3600
        clock.now = 1_000_000.0 + 3600 - 30  # inside the refresh margin
        await http.request("GET", "/x")
    assert len(server.issued) == 2
    assert server.api_auth[-1] == f"Bearer {server.issued[1]}"
    assert all(a is not None for a in server.api_auth)


async def test_token_that_looks_expired_on_arrival_is_not_refreshed_per_request() -> None:
    clock = FakeClock(1_000_000.0)
    server = TokenServer(exp=clock.now - 600)  # the server's clock runs 10+ minutes ahead
    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(server, auth="password", credentials=creds, clock=clock) as http:
        for _ in range(3):
            await http.request("GET", "/x")
    assert len(server.issued) == 1


async def test_concurrent_requests_share_one_login() -> None:
    server = TokenServer()
    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(server, auth="password", credentials=creds) as http:
        await asyncio.gather(*(http.request("GET", "/x") for _ in range(10)))
    assert len(server.issued) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_refused_login_is_auth_failed_and_never_echoes_the_password(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # FastAPI's 422 echoes the input: a hostile or chatty server repeats the password.
        body = json.loads(request.content)
        return httpx.Response(
            status, json={"detail": [{"loc": ["body"], "msg": "bad", "input": body}]}
        )

    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(handler, auth="password", credentials=creds) as http:
        with pytest.raises(AuthFailed) as info:
            await http.request("GET", "/api/v2/assets/events")
    assert "/auth/token" in str(info.value)
    assert PASSWORD not in all_text(info.value)


async def test_login_against_a_server_without_token_endpoint_explains_itself() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>Not Found</html>")

    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(handler, auth="password", credentials=creds) as http:
        with pytest.raises(AuthFailed, match="basic auth"):
            await http.request("GET", "/api/v1/datasets/events")


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, json={"token": "x"}),
        httpx.Response(201, json={"access_token": 12}),
        httpx.Response(201, json=["access_token"]),
        httpx.Response(201, text="<html>login</html>"),
    ],
)
async def test_malformed_login_answer_is_bad_response(answer: httpx.Response) -> None:
    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(lambda r: answer, auth="password", credentials=creds) as http:
        with pytest.raises(BadResponse, match="/auth/token"):
            await http.request("GET", "/x")


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    assert jwt_expiry(make_jwt(1234.5)) == 1234.5
    assert jwt_expiry(make_jwt(None)) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None
    assert jwt_expiry(make_jwt(None).split(".")[0] + ".W10.sig") is None  # payload is []


async def test_basic_auth_does_not_relogin_on_401() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(401, json={"detail": "no"})

    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(handler, auth="basic", credentials=creds) as http:
        with pytest.raises(AuthFailed):
            await http.request("GET", "/api/v1/datasets/events")
    assert calls == ["/api/v1/datasets/events"]


async def test_403_is_auth_failed() -> None:
    # Airflow 2.x with basic_auth+session backends answers bad credentials with 403.
    answer = httpx.Response(403, json={"status": 403, "title": "Forbidden", "detail": None})
    creds = Credentials(username="admin", password=PASSWORD)
    async with make_http(lambda r: answer, auth="basic", credentials=creds) as http:
        with pytest.raises(AuthFailed, match="HTTP 403"):
            await http.request("GET", "/api/v1/datasets/events")


# -- retries and backoff ----------------------------------------------------------------------


class Script:
    """Answers (or raises) from a list, one per call; records the calls."""

    def __init__(self, *steps: httpx.Response | type[httpx.TransportError]) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if isinstance(step, httpx.Response):
            return step
        raise step("simulated", request=request)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, text="Internal Server Error"),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(503, json={"detail": "down"}),
        httpx.Response(504, text=""),
        httpx.Response(429, text=""),
        httpx.ReadTimeout,
        httpx.ConnectTimeout,
        httpx.ConnectError,
        httpx.RemoteProtocolError,
        httpx.ReadError,
    ],
)
async def test_reads_retry_transient_failures_then_succeed(
    failure: httpx.Response | type[httpx.TransportError],
) -> None:
    script = Script(failure, failure, ok({"n": 1}))
    sleep = RecordingSleep()
    async with make_http(script, sleep=sleep) as http:
        reply = await http.request("GET", "/api/v2/assets/events")
    assert reply.json() == {"n": 1}
    assert script.calls == 3
    assert len(sleep.delays) == 2


async def test_backoff_is_exponential_capped_and_bounded_by_max_attempts() -> None:
    script = Script(httpx.Response(503))
    sleep = RecordingSleep()
    options = HttpOptions(max_attempts=6, backoff_base_s=0.5, backoff_max_s=3.0)
    async with make_http(script, sleep=sleep, options=options, rng=CeilingRandom()) as http:
        with pytest.raises(Unavailable, match="gave up after 6 attempts"):
            await http.request("GET", "/api/v2/assets/events")
    assert script.calls == 6
    assert sleep.delays == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_backoff_uses_full_jitter_below_the_ceiling() -> None:
    script = Script(httpx.Response(503))
    sleep = RecordingSleep()
    options = HttpOptions(max_attempts=8, backoff_base_s=1.0, backoff_max_s=100.0)
    async with make_http(script, sleep=sleep, options=options, rng=random.Random(3)) as http:
        with pytest.raises(Unavailable):
            await http.request("GET", "/x")
    ceilings = [2.0**n for n in range(7)]
    assert all(0 <= d <= c for d, c in zip(sleep.delays, ceilings, strict=True))
    assert sleep.delays != ceilings  # jittered, not the bare exponential


async def test_exhausted_retries_are_unavailable_with_cause_and_path() -> None:
    script = Script(httpx.ConnectError)
    async with make_http(script, options=HttpOptions(max_attempts=3)) as http:
        with pytest.raises(Unavailable) as info:
            await http.request("GET", "/api/v1/datasets/events")
    assert type(info.value) is Unavailable
    assert info.value.retriable
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "GET http://airflow.test:8080/api/v1/datasets/events" in str(info.value)
    assert "ConnectError" in str(info.value)
    assert script.calls == 3


async def test_writes_retry_when_the_request_never_reached_the_server() -> None:
    script = Script(httpx.ConnectError, httpx.Response(503), ok({"id": 1}))
    async with make_http(script) as http:
        reply = await http.request("POST", "/api/v2/assets/events", body={"a": 1}, write=True)
    assert reply.status == 200
    assert script.calls == 3


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
        httpx.Response(500, text="Database error"),
        httpx.Response(502),
        httpx.Response(504),
    ],
)
async def test_ambiguous_write_failures_are_not_retried_by_default(
    failure: httpx.Response | type[httpx.TransportError],
) -> None:
    script = Script(failure, ok())
    sleep = RecordingSleep()
    async with make_http(script, sleep=sleep) as http:
        with pytest.raises(WriteOutcomeUnknown, match="may or may not") as info:
            await http.request("POST", "/api/v2/assets/events", body={"a": 1}, write=True)
    assert script.calls == 1  # a second POST could duplicate the event
    assert sleep.delays == []
    assert isinstance(info.value, Unavailable)
    assert info.value.retriable


async def test_ambiguous_write_retries_when_duplicates_are_accepted() -> None:
    script = Script(httpx.ReadTimeout, ok({"id": 2}))
    options = HttpOptions(retry_ambiguous_writes=True)
    async with make_http(script, options=options) as http:
        reply = await http.request("POST", "/x", body={}, write=True)
    assert reply.json() == {"id": 2}
    assert script.calls == 2


async def test_exhausted_ambiguous_write_retries_still_report_unknown_outcome() -> None:
    script = Script(httpx.ReadTimeout, httpx.ConnectError)
    options = HttpOptions(retry_ambiguous_writes=True, max_attempts=3)
    async with make_http(script, options=options) as http:
        with pytest.raises(WriteOutcomeUnknown):
            await http.request("POST", "/x", body={}, write=True)
    assert script.calls == 3


# -- write bound -------------------------------------------------------------------------------


class ConcurrencyProbe:
    """An async handler that records how many requests are inside it at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        for _ in range(20):  # let every other task run up to its own gate
            await asyncio.sleep(0)
        self.inside -= 1
        return ok()


@pytest.mark.parametrize("bound", [1, 4])
async def test_in_flight_writes_are_bounded(bound: int) -> None:
    probe = ConcurrencyProbe()
    options = HttpOptions(max_inflight_writes=bound)
    async with make_http(probe, options=options) as http:
        await asyncio.gather(
            *(http.request("POST", "/x", body={"i": i}, write=True) for i in range(12))
        )
    assert probe.peak == bound


async def test_default_write_bound_is_one_and_reads_are_not_bounded() -> None:
    """One: 2 concurrent POSTs already deadlock a SQLite-backed Airflow 3.3 on its database
    lock (see `ReplayerOptions.concurrency`)."""
    writes, reads = ConcurrencyProbe(), ConcurrencyProbe()

    async def handler(request: httpx.Request) -> httpx.Response:
        return await (writes if request.method == "POST" else reads)(request)

    async with make_http(handler) as http:
        await asyncio.gather(
            *(http.request("POST", "/x", body={}, write=True) for _ in range(10)),
            *(http.request("GET", "/x") for _ in range(10)),
        )
    assert writes.peak == 1
    assert reads.peak == 10


# -- status and body mapping -------------------------------------------------------------------


async def test_4xx_is_bad_request_with_the_servers_detail() -> None:
    answer = httpx.Response(400, json={"detail": "Ordering with 'id' is disallowed"})
    async with make_http(lambda r: answer) as http:
        with pytest.raises(BadRequest, match="Ordering with 'id' is disallowed") as info:
            await http.request("GET", "/api/v1/datasets/events")
    assert "HTTP 400" in str(info.value)


async def test_422_detail_keeps_messages_and_drops_echoed_input() -> None:
    answer = httpx.Response(
        422,
        json={
            "detail": [
                {"loc": ["body", "asset_id"], "msg": "Field required", "input": {"s": "ECHOED"}}
            ]
        },
    )
    async with make_http(lambda r: answer) as http:
        with pytest.raises(BadRequest, match=r"body\.asset_id: Field required") as info:
            await http.request("POST", "/api/v2/assets/events", body={"s": "ECHOED"}, write=True)
    assert "ECHOED" not in str(info.value)


async def test_404_without_allow_is_bad_request() -> None:
    async with make_http(lambda r: httpx.Response(404, json={"detail": "Not Found"})) as http:
        with pytest.raises(BadRequest, match="not found"):
            await http.request("GET", "/api/v9/nothing")


async def test_allowed_statuses_are_returned_and_not_found_maps_json_404_to_asset() -> None:
    answers = {
        "/json": httpx.Response(404, json={"title": "Dataset not found"}),
        "/html": httpx.Response(404, text="<html>nginx</html>"),
    }
    async with make_http(lambda r: answers[r.url.path]) as http:
        json_reply = await http.request("GET", "/json", allow=(404,))
        html_reply = await http.request("GET", "/html", allow=(404,))
    assert isinstance(not_found(json_reply, "dataset 'x'"), AssetNotFound)
    assert type(not_found(html_reply, "dataset 'x'")) is BadRequest


async def test_redirect_is_bad_response_not_followed() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(302, headers={"location": "/login/"})

    async with make_http(handler) as http:
        with pytest.raises(BadResponse, match="redirect"):
            await http.request("GET", "/api/v1/datasets/events")
    assert calls == ["/api/v1/datasets/events"]


async def test_html_body_is_bad_response_naming_path_and_status() -> None:
    answer = httpx.Response(200, html="<html><body>Airflow</body></html>")
    async with make_http(lambda r: answer) as http:
        reply = await http.request("GET", "/api/v2/assets/events")
    with pytest.raises(BadResponse) as info:
        reply.json()
    message = str(info.value)
    assert "/api/v2/assets/events" in message
    assert "HTTP 200" in message
    assert "text/html" in message


async def test_deeply_nested_json_is_bad_response_not_recursion_error() -> None:
    answer = httpx.Response(200, content=b"[" * 200_000 + b"]" * 200_000)
    async with make_http(lambda r: answer) as http:
        reply = await http.request("GET", "/x")
    with pytest.raises(BadResponse, match="not JSON"):
        reply.json()


async def test_oversized_body_is_bad_response_and_not_retried() -> None:
    script = Script(httpx.Response(200, content=b"x" * 5000))
    async with make_http(script, options=HttpOptions(max_body_bytes=1000)) as http:
        with pytest.raises(BadResponse, match="exceeds 1000 bytes"):
            await http.request("GET", "/x")
    assert script.calls == 1


async def test_unserialisable_body_is_bad_request_before_sending() -> None:
    script = Script(ok())
    async with make_http(script) as http:
        with pytest.raises(BadRequest, match="not JSON-serialisable"):
            await http.request("POST", "/x", body={"when": dt.datetime.now()}, write=True)
        with pytest.raises(BadRequest):
            await http.request("POST", "/x", body={"nan": float("nan")}, write=True)
    assert script.calls == 0


async def test_path_prefix_of_the_instance_url_is_kept() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return ok()

    async with make_http(handler, url="http://airflow.test/airflow/") as http:
        await http.request("GET", "/api/v1/health")
    assert paths == ["/airflow/api/v1/health"]


# -- secrecy -----------------------------------------------------------------------------------


async def test_secrets_never_appear_in_messages_reprs_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    basic_value = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()

    def hostile(request: httpx.Request) -> httpx.Response:
        # A server that reflects the Authorization header, and the decoded secret, in errors.
        header = request.headers["authorization"]
        scheme, _, value = header.partition(" ")
        secret = base64.b64decode(value).decode().split(":")[1] if scheme == "Basic" else value
        return httpx.Response(400, json={"detail": f"bad header {header}; secret={secret}"})

    creds = Credentials(username="admin", password=PASSWORD, token=TOKEN)
    errors: list[AirflowError] = []
    for auth in ("basic", "token"):
        async with make_http(hostile, auth=auth, credentials=creds) as http:
            with pytest.raises(BadRequest) as info:
                await http.request("GET", "/api/v1/datasets/events")
            errors.append(info.value)
            assert PASSWORD not in repr(http)
    script = Script(httpx.ConnectError)
    async with make_http(script, auth="basic", credentials=creds) as http:
        with pytest.raises(Unavailable) as unavailable:
            await http.request("GET", "/x")
        errors.append(unavailable.value)

    for secret in (PASSWORD, TOKEN, basic_value):
        assert secret not in repr(creds)
        assert secret not in caplog.text
        for error in errors:
            assert secret not in all_text(error)
    assert "bad header Basic ***; secret=***" in str(errors[0])
    assert "bad header Bearer ***; secret=***" in str(errors[1])
    assert repr(creds) == "Credentials(username=***, password=***, token=***)"


def test_redact_url_drops_userinfo() -> None:
    assert redact_url("https://u:p@host/x") == "https://***@host/x"
    assert redact_url("https://host/x") == "https://host/x"


def test_redact_url_keeps_the_host_when_an_at_sign_follows_the_query() -> None:
    # "?" and "#" end the authority (RFC 3986): an "@" after them is not userinfo.
    assert redact_url("https://host?next=a@b") == "https://host?next=a@b"
    assert redact_url("https://host#a@b") == "https://host#a@b"
    assert redact_url("https://u:p@host?next=a@b") == "https://***@host?next=a@b"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (f"ftp://admin:{PASSWORD}@host", "http"),
        # httpx logs request URLs at INFO: userinfo there would leak into logs.
        (f"http://admin:{PASSWORD}@airflow.test:8080/airflow", "auth Secret"),
    ],
)
def test_bad_urls_are_refused_without_echoing_credentials(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        AirflowHttp(url)
    assert PASSWORD not in str(info.value)
    assert "***@" in str(info.value)


async def test_an_at_sign_in_the_query_is_not_userinfo() -> None:
    # Accepted (not refused as credentials), shown unredacted, and requests go to the host:
    # not refusing it alone would pass with the URL mangled into "http://***@example.com".
    url = "http://airflow.test/?owner=me@example.com"
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return ok()

    async with make_http(handler, url=url) as http:
        assert http.url == url
        await http.request("GET", "/api/v1/health")
    assert hosts == ["airflow.test"]


@pytest.mark.parametrize(
    "bad",
    [{"max_attempts": 0}, {"timeout_s": 0}, {"max_inflight_writes": 0}, {"backoff_base_s": -1}],
)
def test_options_reject_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        HttpOptions(**bad)


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_skip_verify_and_default() -> None:
    assert TlsOptions(insecure_skip_verify=True).verify() is False
    assert TlsOptions().verify() is True


def test_tls_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(ValueError, match=r"nope\.crt"):
        TlsOptions(ca_file=missing).verify()


def test_tls_ca_file_is_the_only_trust_anchor(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rig-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    context = TlsOptions(ca_file=ca_file).verify()
    assert isinstance(context, ssl.SSLContext)
    subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert subjects == [((("commonName", "rig-test-ca"),),)]
    assert context.verify_mode == ssl.CERT_REQUIRED
    AirflowHttp("https://airflow.test", tls=TlsOptions(ca_file=ca_file))  # accepted as a client


async def test_a_certificate_that_does_not_verify_is_tls_failed_and_not_retried(
    tmp_path: Path,
) -> None:
    """A real TLS handshake on loopback: an unknown CA is a person's problem (TlsFailed, not
    retriable: the sync goes Stalled), not an outage to retry; the right CA works."""
    from rig.pki import CertificateAuthority

    ca, other = CertificateAuthority.create("rig-ca"), CertificateAuthority.create("other-ca")
    cert, key = ca.issue("airflow", groups=[], server_names=["127.0.0.1"])
    cert_file, key_file, ca_file, other_ca = (
        tmp_path / name for name in ("server.crt", "server.key", "ca.crt", "other.crt")
    )
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    ca_file.write_bytes(ca.cert_pem)
    other_ca.write_bytes(other.cert_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await writer.start_tls(server_ctx)
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"version": "3.3.0"}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    # Plain TCP, then TLS inside the handler: connections are counted before the handshake.
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    try:
        for trust in (TlsOptions(ca_file=other_ca), TlsOptions()):
            async with AirflowHttp(url, tls=trust, options=HttpOptions(max_attempts=3)) as http:
                with pytest.raises(TlsFailed) as caught:
                    await http.request("GET", "/api/v2/version", authenticate=False)
            assert not caught.value.retriable
            assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert connections == 2, "one attempt each: a retry cannot fix a certificate"
        async with AirflowHttp(url, tls=TlsOptions(ca_file=ca_file)) as http:
            reply = await http.request("GET", "/api/v2/version", authenticate=False)
        assert reply.status == 200
    finally:
        server.close()
        await server.wait_closed()
