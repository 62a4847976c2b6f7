"""A fault-injecting HTTP proxy on loopback, for the reliability suite.

`FaultProxy` sits between a client under test and one real HTTP server (an Airflow API) and
fails a chosen fraction of the requests it carries, each in one of the ways a real network or
a real overloaded server fails:

- ``503`` / ``502``: answered by the proxy, the request never reaches the server (an ingress
  with no healthy backend, a load shedder);
- ``500`` / ``504``: the request *is* forwarded and the server acts on it, but the client gets
  an error instead of the answer (the ambiguous case: a write may have happened);
- ``timeout``: the request is read and never answered; the connection is held open until the
  client gives up (its own read timeout) or `hang_s` passes;
- ``reset``: the connection is reset (TCP RST) right after the request was read, before the
  server saw it;
- ``reset_mid_response``: forwarded, then the connection is reset part-way through relaying
  the server's answer (a truncated body).

Every other request is relayed unchanged. Why a proxy and not a mock: the client under test
keeps its real HTTP stack, and the server behind it stays the real Airflow, so what is tested
is what happens on a real bad network, not what a mock author thought would happen.

Shape, so that a test cannot leave it behind or let it grow:

- it binds 127.0.0.1 only and forwards only to a loopback upstream;
- one request per client connection (the proxy asks the server for ``Connection: close`` and
  says the same to the client), so framing is never guessed: an answer ends when the server
  closes;
- bounded: connections in service (`max_connections`), header and body sizes, how long a
  hang or an upstream exchange may take;
- it runs its own event loop in a daemon thread, so synchronous tests use it as a context
  manager; `stop()` closes the listener, cancels every connection and joins the thread.

The fault decision uses a seeded `random.Random`, so a failing run can be replayed with the
same sequence of outcomes (the order in which concurrent requests draw still varies).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Mapping
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"

#: Outcomes a request can have; "ok" is relayed unchanged.
FAULTS = ("503", "502", "500", "504", "timeout", "reset", "reset_mid_response")

#: How a default proxy splits its failures: mostly 5xx and resets, fewer hangs (each hang
#: costs the client a full read timeout, 15 s for the product's Airflow clients).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "503": 0.15,
    "502": 0.10,
    "500": 0.10,
    "504": 0.10,
    "timeout": 0.15,
    "reset": 0.20,
    "reset_mid_response": 0.20,
}

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_REASONS[504] = "Gateway Timeout"


class ProxyError(RuntimeError):
    """The proxy could not start (bad settings, port in use)."""


class _BadRequest(Exception):
    """The client sent something this proxy does not carry (chunked body, oversized head)."""


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 that fails `fault_rate` of the requests it carries."""

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = LOOPBACK,
        fault_rate: float = 0.2,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        hang_s: float = 30.0,
        upstream_timeout_s: float = 60.0,
        max_connections: int = 64,
        max_header_bytes: int = 64 * 1024,
        max_body_bytes: int = 16 * 1024 * 1024,
        port: int = 0,
    ) -> None:
        if upstream_host != LOOPBACK:
            raise ProxyError(f"the fault proxy forwards to loopback only, not {upstream_host!r}")
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._weights: dict[str, float] = {}
        self.weights = weights if weights is not None else DEFAULT_WEIGHTS
        self._rng = random.Random(seed)
        self._fault_rate = 0.0
        self.fault_rate = fault_rate
        self.hang_s = hang_s
        self.upstream_timeout_s = upstream_timeout_s
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._requested_port = port
        self.port = 0
        self._stats: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None

    # -- settings and readings (any thread) ---------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def fault_rate(self) -> float:
        return self._fault_rate

    @fault_rate.setter
    def fault_rate(self, value: float) -> None:
        """Change the failing fraction at any time (0 turns faults off)."""
        if not 0.0 <= value <= 1.0:
            raise ProxyError(f"fault_rate must be within [0, 1], got {value}")
        self._fault_rate = value

    @property
    def weights(self) -> dict[str, float]:
        with self._lock:
            return dict(self._weights)

    @weights.setter
    def weights(self, value: Mapping[str, float]) -> None:
        """How failures split between kinds; may change at any time."""
        weights = dict(value)
        unknown = set(weights) - set(FAULTS)
        if unknown:
            raise ProxyError(f"unknown fault kinds {sorted(unknown)}; known: {FAULTS}")
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ProxyError("fault weights must be non-negative and not all zero")
        with self._lock:
            self._weights = weights

    def stats(self) -> Counter[str]:
        """Requests carried so far by outcome ("ok", "503", "timeout", ...), and "requests"."""
        with self._lock:
            return Counter(self._stats)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._stats[outcome] += 1
            self._stats["requests"] += 1

    def _choose(self) -> str:
        with self._lock:
            if self._rng.random() >= self._fault_rate:
                return "ok"
            kinds = list(self._weights)
            return self._rng.choices(kinds, weights=[self._weights[k] for k in kinds])[0]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on 127.0.0.1 (the given port, or a free one); return once listening."""
        if self._thread is not None:
            return self
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy->{self.upstream_port}")
        self._thread.daemon = True
        self._thread.start()
        started.wait(timeout=30)
        if failure:
            self._thread.join(timeout=5)
            self._thread = None
            raise ProxyError(f"fault proxy could not listen: {failure[0]}") from failure[0]
        if not self.port:
            raise ProxyError("fault proxy did not start within 30 s")
        return self

    async def _listen(self) -> None:
        self._slots = asyncio.Semaphore(self.max_connections)
        self._server = await asyncio.start_server(
            self._accept,
            host=LOOPBACK,
            port=self._requested_port,
            limit=self.max_header_bytes,
            reuse_address=True,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop listening, drop every connection, end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=15)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- one connection -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None and self._slots is not None
        self._tasks.add(task)
        try:
            async with self._slots:
                await self._serve(reader, writer)
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, body = await self._read_request(reader)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return  # the client went away, or sent no complete request
        except _BadRequest as exc:
            self._count("refused")
            await self._answer(writer, 501, str(exc))
            return
        outcome = self._choose()
        self._count(outcome)
        if outcome in ("503", "502"):
            await self._answer(writer, int(outcome), f"fault proxy: injected {outcome}")
        elif outcome == "reset":
            _reset(writer)
        elif outcome == "timeout":
            # Hold the request unanswered until the client closes or the bound passes.
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), self.hang_s)
        else:
            await self._forward(head, body, writer, outcome)

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"transfer-encoding":
                raise _BadRequest("chunked request bodies are not carried")
            if key == b"content-length":
                length = int(value.strip())
        if length > self.max_body_bytes:
            raise _BadRequest(f"request body of {length} bytes is above the proxy's bound")
        body = await reader.readexactly(length) if length else b""
        return _with_connection_close(head), body

    async def _forward(
        self, head: bytes, body: bytes, writer: asyncio.StreamWriter, outcome: str
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(LOOPBACK, self.upstream_port), self.upstream_timeout_s
            )
        except (OSError, TimeoutError):
            self._count("upstream_down")
            await self._answer(writer, 502, "fault proxy: upstream unreachable")
            return
        try:
            upstream_writer.write(head + body)
            await upstream_writer.drain()
            answer = await asyncio.wait_for(
                _read_all(upstream_reader, self.max_body_bytes + self.max_header_bytes),
                self.upstream_timeout_s,
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            self._count("upstream_failed")
            await self._answer(writer, 502, "fault proxy: upstream failed")
            return
        finally:
            upstream_writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(upstream_writer.wait_closed(), 2)
        if outcome in ("500", "504"):
            # The server acted on the request; the client never learns how it went.
            await self._answer(writer, int(outcome), f"fault proxy: injected {outcome}")
            return
        answer = _with_connection_close(answer)
        if outcome == "reset_mid_response":
            cut = _cut_point(answer)
            writer.write(answer[:cut])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            _reset(writer)
            return
        writer.write(answer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _answer(self, writer: asyncio.StreamWriter, status: int, text: str) -> None:
        body = (text + "\n").encode()
        reason = _REASONS.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()


async def _read_all(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Everything until the server closes (it was asked to), bounded by `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise asyncio.IncompleteReadError(b"".join(chunks), None)
        chunks.append(chunk)


def _with_connection_close(message: bytes) -> bytes:
    """The same HTTP message with its ``Connection`` header set to ``close``."""
    head, sep, rest = message.partition(b"\r\n\r\n")
    lines = [
        line
        for line in head.split(b"\r\n")
        if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + (sep or b"\r\n\r\n") + rest


def _cut_point(answer: bytes) -> int:
    """Somewhere inside the body (or the head, if there is no body to cut)."""
    head_end = answer.find(b"\r\n\r\n") + 4
    if 0 < head_end < len(answer):
        return head_end + max(0, (len(answer) - head_end) // 2)
    return max(1, len(answer) // 2)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with TCP RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")  # asyncio's TransportSocket wrapper
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
