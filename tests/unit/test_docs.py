"""The docs keep their promises: generated parts are current, links and anchors resolve, the
files they name exist, and the commands they show are real.

None of these tests knows a section title: a page can be split, merged or reordered, and
only a broken link, a missing file or a command that no longer parses fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from airflow_asset_sync import cli
from airflow_asset_sync.api import spec as api

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "airflow_asset_sync"
#: Reports the benchmark wrote, copied in as they are (docs/performance.md): their links are
#: checked, the paths and commands they quote are the run's, not the docs'.
REPORTS = ROOT / "docs" / "performance" / "reports"

#: The pages a user or a maintainer reads: the README and everything under docs/.
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")],
    key=lambda p: p.relative_to(ROOT).as_posix(),
)
WRITTEN = [p for p in PAGES if not p.is_relative_to(REPORTS)]
#: Pages whose links must resolve: those, and the other READMEs in the tree.
LINKED = sorted({*PAGES, *(ROOT / "plugins").rglob("README.md")})

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
YAML_FENCE = re.compile(r"^```ya?ml\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: A repository path: a top-level folder of this repository, then more of the path. Not
#: inside another path (`$CHART/crds/`, `/api/v1`) unless it starts with `./`.
TOP_LEVEL = "operator|tools|tests|scripts|charts|crds|deploy|hack|plugins|docs|requirements"
REPO_PATH = re.compile(rf"(?:(?<=\./)|(?<![\w./$-]))(?:{TOP_LEVEL})/[\w./-]*")
#: A path inside the package, as the docs write them (`worker/poller.py`, `clients/kafka`).
SUBPACKAGES = "api|clients|controller|resources|worker"
PACKAGE_PATH = re.compile(rf"(?<![\w./$-])(?:{SUBPACKAGES})/[\w./-]*\w")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code blanked: links are not in code."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE.sub("``", text)


def code(text: str) -> Iterator[str]:
    """Every fenced block and inline code span of a page."""
    for match in FENCE.finditer(text):
        yield match.group(1)
    for match in INLINE.finditer(FENCE.sub("", text)):
        yield match.group(1)


def anchors(path: Path) -> set[str]:
    """The `#fragment`s GitHub makes for a page's headings (lower case, punctuation dropped,
    spaces to hyphens, `-1`, `-2` for repeats), and explicit `<a id=...>` / `name=...`."""
    text = FENCE.sub("", path.read_text())
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


@pytest.mark.parametrize("page", LINKED, ids=rel)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(without_code(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, fragment = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no {file_part}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: {rel(dest)} has no heading #{fragment}")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)


def test_the_link_check_can_fail(tmp_path: Path) -> None:
    """The anchor rule is GitHub's: a heading with code and punctuation, and a repeat."""
    page = tmp_path / "p.md"
    page.write_text("# Delivery modes (`targets[].delivery`)\n## Uninstall\n## Uninstall\n")
    assert anchors(page) == {"delivery-modes-targetsdelivery", "uninstall", "uninstall-1"}
    assert LINK.findall(without_code("see [x](a.md#b) and `[y](c.md)`")) == ["a.md#b"]


def named_paths(page: Path) -> Iterator[str]:
    text = page.read_text()
    for match in REPO_PATH.finditer(text):
        follows = text[match.end() : match.end() + 1]
        if follows in ("<", "$", "{", "*"):  # a pattern (`reports/<run>/`), not a path
            continue
        yield match.group(0).rstrip(".")


def exists_in_package(ref: str) -> bool:
    path = PACKAGE / ref
    return path.exists() or path.with_name(path.name + ".py").exists()


@pytest.mark.parametrize("page", WRITTEN, ids=rel)
def test_every_path_the_docs_name_exists(page: Path) -> None:
    missing = [ref for ref in named_paths(page) if not (ROOT / ref).exists()]
    text = page.read_text()
    missing += [
        f"{ref} (in operator/airflow_asset_sync/)"
        for ref in PACKAGE_PATH.findall(text)
        if not exists_in_package(ref.rstrip("."))
    ]
    assert not missing, f"{rel(page)} names files that are not in the repository: {missing}"


def test_scripts_the_docs_name_can_be_run() -> None:
    scripts = {ref for page in WRITTEN for ref in named_paths(page) if ref.startswith("scripts/")}
    assert scripts
    assert [s for s in sorted(scripts) if not os.access(ROOT / s, os.X_OK)] == []


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("page", WRITTEN, ids=rel)
def test_make_targets_and_python_modules_the_docs_show_exist(page: Path) -> None:
    spans = list(code(page.read_text()))
    targets = {t for span in spans for t in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", span)}
    modules = {m for span in spans for m in re.findall(r"python[\d.]* -m ([\w.]+)", span)}
    assert targets - make_targets() == set(), f"{rel(page)}: no such make target"
    absent = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert absent == [], f"{rel(page)}: no such module for python -m"


def cli_commands(page: Path) -> Iterator[str]:
    """Every `airflow-asset-sync ...` command line of a page: whole lines in code blocks
    (continuations joined, comments dropped) and inline spans that are one whole command."""
    text = page.read_text()
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            found = re.match(r"\s*(?:\S*/)?airflow-asset-sync (.*)$", line)
            if found:
                yield found.group(1)
    for span in INLINE.findall(FENCE.sub("", text)):
        words = " ".join(span.split())
        if words.startswith("airflow-asset-sync ") and not re.search(r"[|<]|\.\.\.", words):
            yield words.removeprefix("airflow-asset-sync ")


def exit_code(args: list[str]) -> int | str | None:
    """What argparse makes of a command line: 0 when it parses (or is `--help`)."""
    try:
        cli._parser().parse_args(args)
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.mark.parametrize("page", WRITTEN, ids=rel)
def test_cli_command_lines_parse(page: Path) -> None:
    """What the docs tell a user to type is accepted by the CLI (options and values)."""
    refused = [c for c in cli_commands(page) if exit_code(shlex.split(c, comments=True))]
    assert refused == [], f"{rel(page)}: the CLI refuses these `airflow-asset-sync` lines"


def test_the_command_check_sees_the_docs_commands() -> None:
    """The extraction finds commands at all (else the test above proves nothing), and the
    parser refuses a wrong one."""
    found = {c for page in WRITTEN for c in cli_commands(page)}
    assert any(c.startswith("verify ") for c in found), found
    assert any(c.startswith("run ") for c in found), found
    assert exit_code(["verify", "-f", "x", "--sinse", "24h"]) == 2
    assert exit_code(["run", "--help"]) == 0


@pytest.mark.parametrize("page", WRITTEN, ids=rel)
def test_every_whole_airflowassetsync_in_the_docs_is_valid(page: Path) -> None:
    """A YAML block holding a complete AirflowAssetSync (apiVersion and kind) validates."""
    for block in YAML_FENCE.findall(page.read_text()):
        for doc in yaml.safe_load_all(block) if "kind: AirflowAssetSync" in block else ():
            if isinstance(doc, dict) and doc.get("kind") == api.KIND and "apiVersion" in doc:
                assert doc["apiVersion"] == api.API_VERSION
                api.SyncSpec.model_validate(doc["spec"])


def test_every_kept_report_is_whole_and_cited() -> None:
    """A report folder holds what the bench wrote, and docs/performance.md cites it: a figure
    without its report, or a report nothing cites, is what issue 16 set out to end."""
    performance = (ROOT / "docs" / "performance.md").read_text()
    for run in sorted(p for p in REPORTS.iterdir() if p.is_dir()):
        assert (run / "report.md").is_file(), f"{rel(run)} has no report.md"
        assert (run / "report.json").is_file(), f"{rel(run)} has no report.json"
        assert f"reports/{run.name}/report.md" in performance, f"nothing cites {rel(run)}"


VALUES = yaml.safe_load((ROOT / "charts" / "airflow-asset-sync" / "values.yaml").read_text())
#: Chart values the docs name wrongly, in text this suite does not own, each with where the
#: fix belongs. `test_known_wrong_chart_values_are_still_wrong` makes the list shrink.
KNOWN_WRONG_VALUES: set[str] = set()


def chart_values(text: str) -> Iterator[str]:
    """Chart values a page names: `--set KEY=`, "the chart's KEY", and code spans that are a
    dotted path starting at one of values.yaml's top-level keys (`metrics.podMonitor.enabled`)."""
    yield from re.findall(r"--set '?([\w.]+)=", text)
    yield from re.findall(r"the chart's ([a-z][\w]*(?:\.\w+)+)", text)
    for span in INLINE.findall(FENCE.sub("", text)):
        found = re.fullmatch(r"([a-zA-Z]\w*(?:\.\w+)*)(?:=\S*)?", span)
        if found and found.group(1).split(".")[0] in VALUES:
            yield found.group(1)


def in_values(path: str) -> bool:
    node: object = VALUES
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


@pytest.mark.parametrize("page", WRITTEN, ids=rel)
def test_chart_values_the_docs_name_exist(page: Path) -> None:
    named = set(chart_values(page.read_text())) - KNOWN_WRONG_VALUES
    assert sorted(v for v in named if not in_values(v)) == [], f"{rel(page)}: not in values.yaml"


def test_known_wrong_chart_values_are_still_wrong() -> None:
    """When the text is fixed (or values.yaml gains the key), drop it from the list."""
    named = {v for page in WRITTEN for v in chart_values(page.read_text())}
    assert {v for v in KNOWN_WRONG_VALUES if v in named and not in_values(v)} == (
        KNOWN_WRONG_VALUES
    )
    assert in_values("metrics.prometheusRule.notReady.enabled")  # the walk finds nested keys


def test_crd_reference_is_generated_from_the_current_crd() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-crd-reference"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_readme_shows_the_ci_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci
    assert "make test" in readme
    assert "make demo" in readme


def test_readme_reasons_table_is_rendered_from_the_hints_describe_shows() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-troubleshooting"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
