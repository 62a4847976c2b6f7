"""One import style inside the package: names, never modules.

Inside `operator/airflow_asset_sync`, a module imports the names it uses
(``from airflow_asset_sync.resources.naming import worker_name``), not the module that holds
them (``from airflow_asset_sync.resources import naming``, ``import airflow_asset_sync.x``)
and not relatively (``from . import x``). Names were the majority when the rule was made
(issue 16); one style means a reader never wonders whether ``naming`` is a module or a
variable, and a call site can be found by the name it calls.

Every import anywhere in a file counts: at the top, under ``TYPE_CHECKING`` and inside a
function (a lazy import is still an import). Exceptions are listed in `EXCEPTIONS`, by
file and by the module imported, and a listed exception that is no longer needed fails
too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "operator"
PACKAGE = "airflow_asset_sync"

#: File (relative to the package) -> modules it may still import as modules. Empty: every
#: file follows the rule.
#: The cursor package's strategies look `checkpoint.lower_bound` up at call time so the
#: benchmark's "before" prototype (tools/bench/prototype.py) can patch it; `__init__` loads
#: both strategies for `make_cursor`. To go once the prototype takes the bound as a parameter.
EXCEPTIONS: dict[str, set[str]] = {
    "worker/cursor/__init__.py": {
        "airflow_asset_sync.worker.cursor.v1",
        "airflow_asset_sync.worker.cursor.v2",
    },
    "worker/cursor/v1.py": {
        "airflow_asset_sync.worker.cursor.checkpoint",
        "airflow_asset_sync.worker.cursor.paging",
    },
    "worker/cursor/v2.py": {
        "airflow_asset_sync.worker.cursor.checkpoint",
        "airflow_asset_sync.worker.cursor.paging",
    },
}


def _is_module(dotted: str) -> bool:
    """Whether `dotted` names a module or package of ours (rather than a name in one)."""
    path = SOURCE_ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_imports(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, module imported as a module, the statement as written) for each offence."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(f"{PACKAGE}."):
                    yield node.lineno, alias.name, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                dots = "." * node.level
                yield node.lineno, f"{dots}{node.module or ''}", f"from {dots}{node.module or ''}"
                continue
            module = node.module or ""
            if module != PACKAGE and not module.startswith(f"{PACKAGE}."):
                continue
            for alias in node.names:
                if _is_module(f"{module}.{alias.name}"):
                    yield (
                        node.lineno,
                        f"{module}.{alias.name}",
                        f"from {module} import {alias.name}",
                    )


def _offences() -> tuple[list[str], dict[str, set[str]]]:
    """Offences not excused, and the exceptions that were used."""
    offences: list[str] = []
    used: dict[str, set[str]] = {}
    for path in sorted((SOURCE_ROOT / PACKAGE).rglob("*.py")):
        relative = path.relative_to(SOURCE_ROOT / PACKAGE).as_posix()
        for line, module, statement in _module_imports(path):
            if module in EXCEPTIONS.get(relative, set()):
                used.setdefault(relative, set()).add(module)
                continue
            where = path.relative_to(SOURCE_ROOT.parent).as_posix()
            offences.append(f"{where}:{line}: {statement} (import the names it uses instead)")
    return offences, used


def test_the_package_imports_names_not_modules() -> None:
    offences, _ = _offences()
    assert not offences, "\n".join(offences)


def test_every_exception_is_still_needed() -> None:
    _, used = _offences()
    stale = {
        f"{file}: {module}"
        for file, modules in EXCEPTIONS.items()
        for module in modules - used.get(file, set())
    }
    assert not stale, f"no longer imported as modules, drop from EXCEPTIONS: {sorted(stale)}"


def test_the_check_sees_each_kind_of_module_import(tmp_path: Path) -> None:
    """The walker itself: each way of importing a module is caught, names are not."""
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import airflow_asset_sync.api.spec\n"
        "from airflow_asset_sync.resources import naming\n"
        "from airflow_asset_sync.resources.naming import worker_name\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from airflow_asset_sync.worker import poke\n"
        "def later() -> None:\n"
        "    from airflow_asset_sync.clients.airflow import base\n"
    )
    found = [(line, module) for line, module, _ in _module_imports(source)]
    assert sorted(found) == [
        (2, "airflow_asset_sync.api.spec"),
        (3, "airflow_asset_sync.resources.naming"),
        (5, "."),
        (7, "airflow_asset_sync.worker.poke"),
        (9, "airflow_asset_sync.clients.airflow.base"),
    ]
