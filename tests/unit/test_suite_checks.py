"""The suite's own checks fail when they should: a leaked asyncio task, a rig test unmarked.

Each case runs a tiny test file in a pytest of its own (`pytester`, in process) with the
two plugins, so that what must fail there does not fail this suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("operator", "tools", "tests")

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
markers =
    rig: needs real components
"""
CONFTEST = """
import pytest

pytest_plugins = ["support.tiers", "support.pending_tasks"]


@pytest.fixture
def kube():
    return "no server: only the name matters to the collection check"
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_a_task_left_pending_fails_the_test_and_a_joined_one_does_not(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
        import asyncio

        async def test_leaks():
            asyncio.ensure_future(asyncio.Event().wait())

        async def test_joins():
            task = asyncio.ensure_future(asyncio.Event().wait())
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        async def test_cancels_without_awaiting():
            asyncio.ensure_future(asyncio.Event().wait()).cancel()  # done a turn later
        """
    )
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leaks*", "*left 1 asyncio task(s) pending*", "*Event.wait*"]
    )


def test_a_rig_fixture_without_the_rig_marker_stops_the_run(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import pytest

        def test_unmarked(kube):
            pass

        @pytest.mark.rig
        def test_marked(kube):
            pass
        """
    )
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not rig")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*must be marked*", "*test_unmarked (uses kube)*"])
    assert "test_marked" not in result.stderr.str()


def test_a_rig_process_started_outside_the_rig_tier_fails(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registered, never started: the check counts what `Server.start` registers. In a
    # process of its own, or this test would count the registrations as its own.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(str(ROOT / d) for d in SOURCE_ROOTS))
    suite.makepyfile(
        """
        import pytest
        from rig.procs import REGISTRY, Server

        def _register(tmp_path):
            server = Server("stand-in", ["true"], log_path=tmp_path / "log")
            REGISTRY.add(server)
            REGISTRY.discard(server)

        def test_unmarked(tmp_path):
            _register(tmp_path)

        @pytest.mark.rig
        def test_marked(tmp_path):
            _register(tmp_path)
        """
    )
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked started 1 rig process(es) in its call*"])
