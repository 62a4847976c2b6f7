"""An async test that leaves asyncio tasks pending fails (after kopf's test suite).

A task still pending when its test ends is work nobody waits for: a poller, a replayer or
a lease renewal that a `stop()` forgot, or a test that started one and never joined it.
pytest-asyncio closes the test's loop afterwards and cancels such tasks silently, so the
leak would show only as a warning at interpreter exit, or as a flaky neighbour. Here the
test fails instead, naming the tasks (their coroutines say where they were created).

How: an async fixture in the test's own loop records the tasks pending at set-up, and at
tear-down (after the test's other fixtures have stopped what they own) gives the loop a few
turns, so that tasks already cancelled or finishing can complete, then fails on any task
still pending that was not there before. Only async tests outside the rig tier are checked:
the rig's tests run real components from threads of their own, and are not part of
`make unit`, where a leak costs the most.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

#: Loop turns granted at tear-down: a cancelled task needs one to run its `finally` blocks,
#: and one more for each `await` in them.
SETTLE_TURNS = 5


def _pending() -> set[asyncio.Task[object]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


def _describe(task: asyncio.Task[object]) -> str:
    """The task, and where it was created when asyncio's debug mode recorded it
    (``PYTHONASYNCIODEBUG=1``): a pending ``Event.wait()`` says little by itself."""
    created = getattr(task, "_source_traceback", None)
    where = f" created at {created[-1].filename}:{created[-1].lineno}" if created else ""
    return f"{task!r}{where}"


@pytest.fixture(autouse=True)
def _no_pending_asyncio_tasks(request: pytest.FixtureRequest) -> None:
    """Checks every async test that is not marked rig (see the module docstring)."""
    node = request.node
    if pytest_asyncio.is_async_test(node) and node.get_closest_marker("rig") is None:
        request.getfixturevalue("_asyncio_tasks_left_behind")


@pytest_asyncio.fixture
async def _asyncio_tasks_left_behind() -> AsyncIterator[None]:
    before = _pending()
    yield
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)
    left = _pending() - before
    if left:
        names = "\n  ".join(sorted(_describe(t) for t in left))
        for task in left:  # not into the next test's report: the loop is closed anyway
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        pytest.fail(
            f"the test left {len(left)} asyncio task(s) pending (PYTHONASYNCIODEBUG=1 shows"
            f" where each was created):\n  {names}",
            pytrace=False,
        )
