"""HTTP plumbing shared by the 2.x and 3.x clients: auth, TLS, retries, write bound, errors.

The two Airflow APIs differ in paths and payloads, not in how one talks to them, so this is
the one place that knows httpx. `v1`/`v2` see only `Reply` (status + bytes) and the error
tree of `base`.

Decisions worth knowing:

- **Retries** use exponential backoff with full jitter (a random delay in
  ``[0, min(cap, base * 2**n)]``, the ceiling from `api.backoff`) so that many replayers
  hitting one recovering instance do not retry in lockstep. Attempts are bounded; when they
  run out the caller gets `Unavailable`, which is retriable at *its* level (with its own,
  longer back-off).
- **POSTs are not idempotent** in either API (a second POST is a second event). They are
  retried only when the request certainly did not reach Airflow (connect errors, pool
  timeout, 503, 429). After an *ambiguous* failure (read timeout, dropped connection,
  500/502/504) the client raises `WriteOutcomeUnknown` instead of writing a duplicate,
  unless `HttpOptions.retry_ambiguous_writes` says duplicates are acceptable.
- **In-flight writes are bounded** per instance by a semaphore (default 1): Airflow on
  SQLite serialises writes, and already at 2 concurrent POSTs (3.3.2) writers wait on each
  other's database lock until SQLite's 5 s busy timeout and a quarter of them fail with 500,
  instead of going faster (measured; see `ReplayerOptions.concurrency`).
- **Secrets never leave this module in text**: messages name method, redacted base URL,
  path and status; server-provided detail is truncated and scrubbed of every credential
  value, and the login endpoint's body is never quoted at all (FastAPI's 422 echoes the
  request input, i.e. the password).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx

from airflow_asset_sync.api.backoff import ceiling
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
from airflow_asset_sync.clients.airflow.wire import dumps_body, loads_json, type_name

log = logging.getLogger(__name__)

AuthKind = Literal["none", "basic", "password", "token"]
#: Which REST API the instance speaks, when known: `v1` is Airflow 2.x, `v2` is Airflow 3.x.
ApiKind = Literal["v1", "v2"]
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
#: Query parameters; a sequence is sent as the parameter repeated (``state=a&state=b``).
Params = Mapping[str, str | int | Sequence[str]]

#: The auth manager's token endpoint, relative to the instance URL (Airflow 3.x).
TOKEN_PATH = "/auth/token"

#: Hints for an auth kind that cannot work with the instance's Airflow version.
BASIC_ON_V2_HINT = (
    "Airflow 3 (/api/v2) accepts only bearer tokens, so 'basic' auth cannot work here: use auth"
    " 'password' (username and password exchanged for a JWT at /auth/token); 'basic' is for"
    " Airflow 2.x with the basic_auth API backend"
)
PASSWORD_ON_V1_HINT = (
    "Airflow 2.x (/api/v1) has no /auth/token, so 'password' auth cannot work here: use auth"
    " 'basic' (HTTP basic auth; needs the basic_auth API backend in [api] auth_backends);"
    " 'password' is for Airflow 3"
)

_USERINFO = re.compile(r"(?<=://)[^/?#@\s]*@")
#: Header-shaped credentials ("Bearer eyJ...") in server-provided text, as a second line
#: of defence behind scrubbing the known values (case-sensitive, so prose like "basic auth"
#: survives).
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic) [A-Za-z0-9._~+/=-]{8,}")
_DETAIL_CHARS = 300

#: Statuses after which the server did not act on the request: safe to retry any method.
_RETRY_SAFE_STATUS = frozenset({429, 503})
#: Statuses after which a write may or may not have happened.
_AMBIGUOUS_STATUS = frozenset({408, 500, 502, 504})
#: Transport errors raised before the request reached the server.
_SAFE_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)
#: Transport errors that a retry cannot fix: the request itself cannot be sent.
_FATAL_ERRORS: tuple[type[Exception], ...] = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def _certificate_rejected(exc: BaseException) -> bool:
    """True when the handshake failed because the server's certificate did not verify.

    httpx wraps the `ssl` error it got from the socket layer; the chain's types tell, so no
    message text is parsed.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def redact_url(url: str) -> str:
    """Replace ``user:password@`` in a URL by ``***@`` (httpx accepts credentials there)."""
    return _USERINFO.sub("***@", url)


@dataclass(frozen=True)
class Credentials:
    """Plain credential values, already read from their Secret by the caller.

    Which ones are needed depends on the auth kind: basic and password need username and
    password, token needs token. ``repr`` shows only which are present.
    """

    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        present = [n for n in ("username", "password", "token") if getattr(self, n)]
        return f"Credentials({', '.join(f'{n}=***' for n in present)})"

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message."""
        return tuple(v for v in (self.username, self.password, self.token) if v)


@dataclass(frozen=True)
class HttpOptions:
    """Tunables of one instance's HTTP client; every duration is in seconds (``_s``)."""

    #: Read/write/pool timeout of one attempt. SQLite-backed Airflow under write contention
    #: answers in seconds, not milliseconds; 5 s proved too short at 8 in-flight POSTs.
    timeout_s: float = 15.0
    connect_timeout_s: float = 5.0
    #: Attempts per request including the first (re-login after 401 does not count).
    max_attempts: int = 4
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    #: POSTs in flight to this instance (see the module docstring for why one).
    max_inflight_writes: int = 1
    #: Retry POSTs after ambiguous failures, accepting possible duplicate events.
    retry_ambiguous_writes: bool = False
    #: Largest response body read (decompressed). A page of 100 events at the 256 KiB
    #: `extra` limit is 25 MiB; anything much larger is not an Airflow answer.
    max_body_bytes: int = 64 * 1024 * 1024
    #: Log in again this long before the JWT's ``exp`` (at most half its lifetime).
    token_refresh_margin_s: float = 60.0
    #: Page size the server is assumed to honour (`[api] maximum_page_limit`, default 100).
    page_limit: int = 100

    def __post_init__(self) -> None:
        positive = {
            "timeout_s": self.timeout_s,
            "connect_timeout_s": self.connect_timeout_s,
            "max_attempts": self.max_attempts,
            "max_inflight_writes": self.max_inflight_writes,
            "max_body_bytes": self.max_body_bytes,
            "page_limit": self.page_limit,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"HttpOptions.{name} must be positive, got {value!r}")
        for name in ("backoff_base_s", "backoff_max_s", "token_refresh_margin_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"HttpOptions.{name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class TlsOptions:
    """Server certificate checking: a CA bundle file, the system store, or none at all."""

    ca_file: str | Path | None = None
    insecure_skip_verify: bool = False

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify`` gets (an SSLContext: httpx 0.28 deprecates str paths)."""
        if self.insecure_skip_verify:
            if self.ca_file is not None:
                log.warning("insecureSkipVerify is set; the CA bundle %s is ignored", self.ca_file)
            return False
        if self.ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ValueError(f"CA bundle {self.ca_file} cannot be loaded: {reason}") from None


@dataclass(frozen=True)
class Reply:
    """A complete HTTP answer: status and body bytes (already bounded in size)."""

    method: str
    #: ``METHOD <redacted base URL><path>`` without the query: what messages call it.
    target: str
    status: int
    body: bytes = field(repr=False)
    content_type: str = ""
    #: The ``Date`` header as an aware datetime, None when absent or not an HTTP date.
    date: datetime | None = None

    @property
    def where(self) -> str:
        return f"{self.target} (HTTP {self.status})"

    def json(self) -> object:
        """The decoded body; `BadResponse` for anything that is not JSON (HTML error pages)."""
        try:
            return loads_json(self.body)
        except (ValueError, RecursionError):
            kind = self.content_type.split(";")[0].strip() or "no content type"
            raise BadResponse(
                f"{self.where}: body is not JSON ({kind}, {len(self.body)} bytes)"
            ) from None

    def json_object(self) -> dict[str, object]:
        body = self.json()
        if not isinstance(body, dict):
            raise BadResponse(f"{self.where}: expected a JSON object, got {type_name(body)}")
        return body

    def is_json_object(self) -> bool:
        try:
            self.json_object()
        except BadResponse:
            return False
        return True


def http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header (RFC 9110 IMF-fixdate) as an aware UTC datetime, or None.

    Anything else (missing, garbled, no zone) is None: the header only ever narrows a re-read,
    so a server without a usable one costs requests, never events.
    """
    if not value or len(value) > 64:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def not_found(reply: Reply, what: str) -> AirflowError:
    """404 -> `AssetNotFound`, but only if Airflow said it (a JSON body).

    An HTML 404 comes from an ingress or a wrong base URL; calling that "asset not found"
    would make a replayer with ``onUnknownAsset: retry`` wait forever on a typo.
    """
    if reply.is_json_object():
        return AssetNotFound(f"{reply.where}: {what} not found")
    return BadRequest(f"{reply.where}: 404 without an Airflow answer; is the URL right?")


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying the signature.

    Only used to refresh early; the server still decides. A token that is not a JWT, or
    has no usable ``exp``, yields None and is refreshed only on 401.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


class _Failure(Exception):
    """Internal: one failed attempt, classified for the retry loop."""

    def __init__(
        self,
        reason: str,
        *,
        retry: bool,
        ambiguous: bool,
        fatal: type[AirflowError] = BadRequest,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.ambiguous = ambiguous
        #: What a failure that is not retried raises.
        self.fatal = fatal


class AirflowHttp:
    """One Airflow instance's HTTP client. Construct with a URL; close with `aclose`.

    ``transport``, ``sleep``, ``clock`` and ``rng`` exist for tests (httpx.MockTransport, a
    recording no-op sleep, a fixed clock, a seeded or extreme random source).
    """

    def __init__(
        self,
        url: str,
        *,
        auth: AuthKind = "none",
        credentials: Credentials | None = None,
        options: HttpOptions | None = None,
        tls: TlsOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"Airflow URL must be http(s)://host[/path], got {redact_url(url)!r}")
        if _USERINFO.search(url.split("?")[0].split("#")[0]):
            # httpx logs every request URL at INFO level; credentials in it would leak there.
            raise ValueError(
                f"Airflow URL {redact_url(url)!r} contains credentials; put them in the auth"
                " Secret instead"
            )
        self._url = url.rstrip("/")
        self._credentials = credentials or Credentials()
        self._options = options or HttpOptions()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._write_slots = asyncio.Semaphore(self._options.max_inflight_writes)
        self._login_lock = asyncio.Lock()
        self._token: str | None = None
        self._token_refresh_at: float | None = None
        self._secrets: tuple[str, ...] = ()
        self._auth: AuthKind = "none"
        self._api: ApiKind | None = None
        self.configure_auth(auth)
        timeout = httpx.Timeout(self._options.timeout_s, connect=self._options.connect_timeout_s)
        self._client = httpx.AsyncClient(
            base_url=self._url,
            transport=transport,
            verify=(tls or TlsOptions()).verify(),
            timeout=timeout,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "airflow-asset-sync"},
        )

    # -- configuration ------------------------------------------------------------------

    def configure_auth(self, auth: AuthKind, *, api_version: ApiKind | None = None) -> None:
        """Choose the auth kind. The factory calls it after auto-detection, when the kind
        follows from the API version (username/password = basic for 2.x, JWT for 3.x).
        ``api_version``, when known, lets an auth failure say that the kind does not fit the
        Airflow version (basic against 3.x, password against 2.x)."""
        creds = self._credentials
        if auth in ("basic", "password") and not (creds.username and creds.password):
            raise ValueError(f"auth '{auth}' needs a username and a password")
        if auth == "token" and not creds.token:
            raise ValueError("auth 'token' needs a token")
        if auth not in ("none", "basic", "password", "token"):
            raise ValueError(f"unknown auth kind {auth!r}")
        self._auth = auth
        if api_version is not None:
            self._api = api_version
        self._token = creds.token if auth == "token" else None
        self._token_refresh_at = None
        secrets = list(creds.secrets())
        if auth == "basic":
            secrets.append(self._basic_value())
        self._secrets = tuple(secrets)

    @property
    def url(self) -> str:
        """The instance URL with any userinfo redacted."""
        return redact_url(self._url)

    @property
    def auth(self) -> AuthKind:
        return self._auth

    @property
    def options(self) -> HttpOptions:
        return self._options

    def __repr__(self) -> str:
        return f"AirflowHttp(url={self.url!r}, auth={self._auth!r})"

    # -- public request API ------------------------------------------------------------

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Params | None = None,
        body: Mapping[str, object] | None = None,
        authenticate: bool = True,
        write: bool = False,
        allow: Collection[int] = (),
    ) -> Reply:
        """Send with auth, retries and error mapping; 2xx and ``allow``-ed statuses return.

        ``write`` marks a non-idempotent request: it takes a write slot and is not retried
        after ambiguous failures. Everything else maps to the `base` error tree.
        """
        content = dumps_body(body) if body is not None else None
        target = f"{method} {self.url}{path}"
        attempt = 0
        relogged = False
        maybe_written = False
        while True:
            attempt += 1
            headers = await self._auth_headers() if authenticate else {}
            sent_token = self._token
            try:
                reply = await self._attempt(method, path, target, params, content, headers, write)
            except _Failure as failure:
                maybe_written = maybe_written or (write and failure.ambiguous)
                if write and failure.ambiguous and not self._options.retry_ambiguous_writes:
                    raise self._error(
                        WriteOutcomeUnknown,
                        f"{target}: {failure.reason}; the write may or may not have happened",
                    ) from failure.__cause__
                if not failure.retry:
                    raise self._error(failure.fatal, f"{target}: {failure.reason}") from (
                        failure.__cause__
                    )
                if attempt >= self._options.max_attempts:
                    kind = WriteOutcomeUnknown if maybe_written else Unavailable
                    raise self._error(
                        kind, f"{target}: {failure.reason} (gave up after {attempt} attempts)"
                    ) from failure.__cause__
                await self._backoff(target, failure.reason, attempt)
                continue
            if reply.status == 401 and authenticate and self._auth == "password" and not relogged:
                relogged = True
                attempt -= 1  # a re-login is not a failed attempt
                await self._relogin(stale=sent_token)
                continue
            if 200 <= reply.status < 300 or reply.status in allow:
                return reply
            raise self._status_error(reply, path)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- one attempt ---------------------------------------------------------------------

    async def _attempt(
        self,
        method: str,
        path: str,
        target: str,
        params: Params | None,
        content: bytes | None,
        headers: dict[str, str],
        write: bool,
    ) -> Reply:
        """One exchange; raises `_Failure` for anything the retry loop must decide on."""
        if content is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            request = self._client.build_request(
                method,
                path,
                params=dict(params) if params else None,
                content=content,
                headers=headers,
            )
        except httpx.InvalidURL as exc:
            raise _Failure("invalid request URL", retry=False, ambiguous=False) from exc
        if write:
            async with self._write_slots:
                reply = await self._exchange(request, method, target)
        else:
            reply = await self._exchange(request, method, target)
        status = reply.status
        if status in _RETRY_SAFE_STATUS:
            raise _Failure(f"HTTP {status}", retry=True, ambiguous=False)
        if status in _AMBIGUOUS_STATUS or status >= 500:
            raise _Failure(f"HTTP {status}", retry=True, ambiguous=True)
        return reply

    async def _exchange(self, request: httpx.Request, method: str, target: str) -> Reply:
        try:
            response = await self._client.send(request, stream=True)
        except _FATAL_ERRORS as exc:
            raise _Failure(self._describe(exc), retry=False, ambiguous=False) from exc
        except _SAFE_ERRORS as exc:
            if _certificate_rejected(exc):
                raise _Failure(
                    self._describe(exc), retry=False, ambiguous=False, fatal=TlsFailed
                ) from exc
            raise _Failure(self._describe(exc), retry=True, ambiguous=False) from exc
        except httpx.TransportError as exc:
            raise _Failure(self._describe(exc), retry=True, ambiguous=True) from exc
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._options.max_body_bytes:
                    raise self._error(
                        BadResponse,
                        f"{target} (HTTP {response.status_code}): body exceeds"
                        f" {self._options.max_body_bytes} bytes",
                    )
                chunks.append(chunk)
        except httpx.DecodingError as exc:
            raise self._error(
                BadResponse, f"{target} (HTTP {response.status_code}): undecodable body"
            ) from exc
        except httpx.TransportError as exc:
            raise _Failure(self._describe(exc), retry=True, ambiguous=True) from exc
        finally:
            await response.aclose()
        return Reply(
            method=method,
            target=target,
            status=response.status_code,
            body=b"".join(chunks),
            content_type=response.headers.get("content-type", ""),
            date=http_date(response.headers.get("date")),
        )

    async def _backoff(self, target: str, reason: str, attempt: int) -> None:
        """Full jitter: uniform below `api.backoff.ceiling` (`attempt` counts from 1)."""
        top = ceiling(
            attempt - 1,
            initial=self._options.backoff_base_s,
            maximum=self._options.backoff_max_s,
        )
        delay = self._rng.uniform(0.0, top)
        log.warning(
            "%s; retrying in %.2f s (attempt %d of %d)",
            self._scrub(f"{target}: {reason}"),
            delay,
            attempt + 1,
            self._options.max_attempts,
        )
        await self._sleep(delay)

    # -- auth ------------------------------------------------------------------------------

    def _basic_value(self) -> str:
        pair = f"{self._credentials.username}:{self._credentials.password}"
        return base64.b64encode(pair.encode()).decode()

    async def _auth_headers(self) -> dict[str, str]:
        if self._auth == "basic":
            return {"Authorization": f"Basic {self._basic_value()}"}
        if self._auth == "token":
            return {"Authorization": f"Bearer {self._token}"}
        if self._auth == "password":
            if self._token is None or (
                self._token_refresh_at is not None and self._clock() >= self._token_refresh_at
            ):
                await self._relogin(stale=self._token)
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    async def _relogin(self, *, stale: str | None) -> None:
        """Fetch a new JWT unless another task already replaced ``stale`` meanwhile."""
        async with self._login_lock:
            if self._token is not None and self._token != stale:
                return
            token = await self._login()
            self._token = token
            self._secrets = (*self._credentials.secrets(), token)
            expiry = jwt_expiry(token)
            now = self._clock()
            if expiry is None or expiry <= now:
                # No exp, or one that is already past by our clock (the server's clock runs
                # ahead): refreshing early would mean a login per request; rely on 401.
                self._token_refresh_at = None
            else:
                margin = min(self._options.token_refresh_margin_s, (expiry - now) / 2)
                self._token_refresh_at = expiry - margin

    async def _login(self) -> str:
        """POST /auth/token -> 201 {"access_token"}. The response body is never quoted."""
        creds = self._credentials
        reply = await self.request(
            "POST",
            TOKEN_PATH,
            body={"username": creds.username, "password": creds.password},
            authenticate=False,
            allow=range(300, 500),
        )
        if self._api == "v1" and not 200 <= reply.status < 300:
            raise self._error(AuthFailed, f"{reply.where}: login failed; {PASSWORD_ON_V1_HINT}")
        if 300 <= reply.status < 400:
            raise self._error(
                AuthFailed, f"{reply.where}: login redirected; is the URL the API server?"
            )
        if reply.status in (400, 401, 403, 422):
            raise self._error(
                AuthFailed, f"{reply.where}: login refused; check the username and password"
            )
        if reply.status in (404, 405):
            raise self._error(
                AuthFailed, f"{reply.where}: no token endpoint here; {PASSWORD_ON_V1_HINT}"
            )
        if reply.status >= 400:
            raise self._error(AuthFailed, f"{reply.where}: login failed")
        try:
            token = reply.json_object().get("access_token")
        except BadResponse:
            raise self._error(
                BadResponse, f"{reply.where}: login answer is not a JSON object"
            ) from None
        if not isinstance(token, str) or not token or len(token) > 16384:
            raise self._error(BadResponse, f"{reply.where}: login answer has no access_token")
        return token

    # -- errors ------------------------------------------------------------------------------

    def _status_error(self, reply: Reply, path: str = "") -> AirflowError:
        status = reply.status
        if status in (401, 403):
            v2 = self._api == "v2" or (self._api is None and path.startswith("/api/v2/"))
            if self._auth == "basic" and v2:
                hint = BASIC_ON_V2_HINT
            elif self._auth == "none":
                hint = (
                    "no auth is configured for this endpoint and it does not allow anonymous"
                    " API access; add auth (basic for 2.x, password for 3.x, or token)"
                )
            else:
                hint = "check the credentials and the user's role"
            return self._error(AuthFailed, f"{reply.where}: not authorised; {hint}")
        if 300 <= status < 400:
            return self._error(
                BadResponse, f"{reply.where}: unexpected redirect; is the URL the API server?"
            )
        if status == 404:
            return self._error(BadRequest, f"{reply.where}: not found")
        return self._error(BadRequest, f"{reply.where}: {self._detail(reply)}")

    def _detail(self, reply: Reply) -> str:
        """A short, scrubbed excerpt of an error body (FastAPI `detail`, connexion `detail`/
        `title`); only the messages of a 422 list, never its echoed ``input``."""
        try:
            body = loads_json(reply.body)
        except (ValueError, RecursionError):
            return f"non-JSON error body ({len(reply.body)} bytes)"
        text = "no detail"
        if isinstance(body, dict):
            detail = body.get("detail")
            if isinstance(detail, str) and detail:
                text = detail
            elif isinstance(detail, list):
                msgs = [
                    f"{'.'.join(map(str, d.get('loc') or []))}: {d.get('msg')}"
                    for d in detail[:5]
                    if isinstance(d, dict)
                ]
                text = "; ".join(msgs) or text
            elif isinstance(body.get("title"), str):
                text = str(body["title"])
        return text[:_DETAIL_CHARS]

    def _describe(self, exc: Exception) -> str:
        text = str(exc)[:_DETAIL_CHARS]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def _scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return _AUTH_VALUE.sub(r"\1 ***", redact_url(text))

    def _error(self, kind: type[AirflowError], message: str) -> AirflowError:
        return kind(self._scrub(message))
