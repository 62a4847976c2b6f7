"""A rig process that is sent SIGTERM (`timeout`, a cancelled CI job) stops the servers it
started: the default SIGTERM action skips finalisers and `atexit`, which left a whole rig of
Kafka and Airflow processes running after a timed-out session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import signal, sys
from pathlib import Path
from rig.procs import Server
server = Server("sleeper", ["sleep", "300"], log_path=Path(sys.argv[1]))
server.start()
print(server.proc.pid, flush=True)
signal.pause()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_servers_the_process_started(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("operator", "tools")))
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "sleeper.log")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        assert parent.stdout is not None
        sleeper = int(parent.stdout.readline())
        try:
            assert _alive(sleeper)
            parent.send_signal(signal.SIGTERM)
            parent.wait(timeout=30)
            deadline = time.monotonic() + 15
            while _alive(sleeper) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(sleeper), "the server outlived the SIGTERM'd process"
        finally:
            parent.kill()
            if _alive(sleeper):
                os.killpg(sleeper, signal.SIGKILL)
