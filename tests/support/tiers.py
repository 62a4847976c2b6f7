"""`make unit` starts nothing: a test that starts a real component must carry the rig marker.

`make unit` runs ``-m "not rig"``, so an unmarked test that boots the API server, Kafka or an
Airflow makes the fast tier slow and makes it need the rig cache. A marker is easy to forget
(a new test in a folder whose other tests are pure, a fixture that starts using another), so
two checks hold the rule instead of review:

- at collection, any test whose fixture closure holds one of `RIG_FIXTURES` (directly, or
  through a fixture such as ``sync_crd`` that uses ``kube``) and has no rig marker stops the
  run with the list of offenders, under every ``-m``, so the mistake shows on the first run;
- while a test runs, a test outside the rig tier that starts a rig `Server` (every process
  of the rig is one, see `rig.procs`) fails. That also catches what the names cannot:
  ``request.getfixturevalue("kube")``, or a `SyncProcess` started in the test body.

Not a reason to mark: a tool run once (``helm template``, ``promtool``), a thread, a server
of the standard library on loopback (the fault proxy's own tests), a pure rig fixture
(``assets``, ``kafka_topic``).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from rig.procs import REGISTRY

#: Rig fixtures that start processes (see the plugins in `tests/conftest.py`).
RIG_FIXTURES = frozenset(
    {"kube", "kafka", "airflow2", "airflow2b", "airflow3", "airflow3b", "cluster"}
)
#: Project processes on top of the rig (`airflow-asset-sync run`).
RIG_FIXTURES |= {"sync_runner"}


def is_rig(item: pytest.Item) -> bool:
    return item.get_closest_marker("rig") is not None


def unmarked_rig_users(items: list[pytest.Item]) -> list[str]:
    """The node ids of tests that use a rig fixture without the rig marker, with the fixtures."""
    out = []
    for item in items:
        used = RIG_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used and not is_rig(item):
            out.append(f"{item.nodeid} (uses {', '.join(sorted(used))})")
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before ``-m`` deselects anything: every test is checked, whichever tier runs."""
    offenders = unmarked_rig_users(items)
    if offenders:
        raise pytest.UsageError(
            "tests that start real components must be marked `@pytest.mark.rig` (or carry"
            " `pytestmark = pytest.mark.rig`), so that `make unit` starts nothing:\n  "
            + "\n  ".join(offenders)
        )


def _started_nothing(item: pytest.Item, phase: str, before: int) -> None:
    started = REGISTRY.started - before
    if started and not is_rig(item):
        pytest.fail(
            f"{item.nodeid} started {started} rig process(es) in its {phase} without the rig"
            " marker: `make unit` must start nothing (mark it `@pytest.mark.rig`)",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    before = REGISTRY.started
    yield
    _started_nothing(item, "setup", before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    before = REGISTRY.started
    yield
    _started_nothing(item, "call", before)
