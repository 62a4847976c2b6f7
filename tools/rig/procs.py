"""Start and stop the rig's server processes so that none outlives the test session.

Each server runs in its own process group with its output in a log file. `stop()` sends
SIGTERM to the group, waits, then SIGKILLs; `ProcessRegistry.stop_all()` runs from the
session fixture's finaliser and from an `atexit` hook, so Ctrl-C and failures clean up too.
SIGTERM (`timeout`, a CI runner cancelling the job) is turned into a KeyboardInterrupt, since
the default SIGTERM action exits without finalisers or `atexit` and leaves every server running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rig.cache import log


def free_port() -> int:
    """A free TCP port on loopback (the kernel picks it; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ProcessFailed(RuntimeError):
    """A rig process exited or never became ready; the message carries its log tail."""


class Server:
    """One long-running process of the rig."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        REGISTRY.add(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, check: Callable[[], bool], *, timeout_s: float, what: str = "") -> None:
        """Poll ``check`` until true; fail fast with the log tail if the process dies."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while time.monotonic() < deadline:
            if not self.running:
                raise ProcessFailed(
                    f"{self.name} exited ({self.returncode}) before {what or 'ready'}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(Exception):  # not ready yet, whatever the probe raised
                if check():
                    return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise ProcessFailed(
            f"{self.name} not {what or 'ready'} after {timeout_s:.0f}s:\n{self.log_tail()}"
        )

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole process group (servers fork: gunicorn, schedulers, the JVM)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, *, timeout_s: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {timeout_s:.0f}s; killing")
        # Children of the group may outlive the leader (gunicorn workers, task runners).
        self.kill(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        REGISTRY.discard(self)


class ProcessRegistry:
    def __init__(self) -> None:
        self._servers: list[Server] = []
        #: Servers started so far (stopped ones included): the test tiers read it to fail a
        #: test outside the rig tier that started one (`support.tiers`).
        self.started = 0

    def add(self, server: Server) -> None:
        if server not in self._servers:
            self._servers.append(server)
            self.started += 1

    def discard(self, server: Server) -> None:
        if server in self._servers:
            self._servers.remove(server)

    def stop_all(self) -> None:
        for server in reversed(list(self._servers)):
            with contextlib.suppress(Exception):
                server.stop(timeout_s=10)


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


REGISTRY = ProcessRegistry()
atexit.register(REGISTRY.stop_all)
if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
):
    # Only where nobody chose a handler (pytest, the bench, the demo); signal() may only be
    # called from the main thread, which is where these modules are first imported.
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
