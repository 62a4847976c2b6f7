"""Container images for the real cluster, all built on this machine (no registry is reachable).

- ``pause``: the sandbox image every pod starts with, a static C binary built from
  ``node/pause.c`` and imported into Docker as a one-file image.
- ``pybase``: a base image equal in spirit to ``python:3.11-slim`` (Debian bookworm, Python 3.11,
  venv, pip, CA certificates), made with debootstrap from Debian's packages. The rig's copy
  also trusts the machine's extra CA certificates (``/usr/local/share/ca-certificates``), which
  HTTPS through this workplace's egress needs; the shipped image never carries them, because
  the ``Dockerfile`` only takes the base as a build argument.
- ``project``: the image built from the project's own ``Dockerfile`` on that base, exactly as a
  user builds it (``docker build --build-arg BASE=...``).

Docker builds and stores the images; `import_into` copies them into the cluster's containerd
(namespace ``k8s.io``), where the kubelet finds them with ``imagePullPolicy: Never``.
The debootstrap tree is cached by suite and package list; Docker's image store is the cache
for the rest (an image whose tag exists is not rebuilt unless its inputs' digest changed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from rig.cache import CACHE, ROOT, cached, log, phase
from rig.procs import ProcessFailed, Server

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PYBASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")

NODE_FILES = Path(__file__).resolve().parent / "node"
DOCKER_SOCKET = Path("/var/run/docker.sock")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def docker(*args: str, input: bytes | None = None, timeout_s: float = 900) -> str:
    # The legacy builder: Debian's docker.io has no buildx, and BuildKit would try to pull
    # the `# syntax=` frontend image from a registry.
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    result = subprocess.run(
        ["docker", *args], input=input, capture_output=True, timeout=timeout_s, check=False, env=env
    )
    if result.returncode != 0:
        raise ProcessFailed(
            f"docker {' '.join(args[:3])} failed ({result.returncode}):\n"
            + result.stderr.decode(errors="replace")[-3000:]
        )
    return result.stdout.decode(errors="replace")


def _docker_up() -> bool:
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


@contextlib.contextmanager
def docker_daemon(workdir: Path) -> Iterator[None]:
    """Use the running dockerd, or start one for the session and stop it afterwards.

    Started with ``--iptables=false --bridge=none``: builds use the host network, and Docker
    leaves the host's iptables (its FORWARD DROP policy among them) alone.
    """
    if _docker_up():
        yield
        return
    if shutil.which("dockerd") is None:
        raise ProcessFailed(
            "dockerd is not installed (Debian package docker.io); run scripts/host-setup"
        )
    server = Server(
        "dockerd",
        [
            "dockerd",
            "--iptables=false",
            "--ip-forward=false",
            "--bridge=none",
            f"--host=unix://{DOCKER_SOCKET}",
            f"--exec-root={workdir / 'docker-exec'}",
            f"--pidfile={workdir / 'dockerd.pid'}",
        ],
        log_path=workdir / "dockerd.log",
    )
    server.start()
    try:
        server.wait_ready(_docker_up, timeout_s=60, what="answering")
        yield
    finally:
        server.stop(timeout_s=20)


def _image_exists(tag: str) -> bool:
    probe = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, check=False, timeout=30
    )
    return probe.returncode == 0


def pause_image() -> str:
    source = (NODE_FILES / "pause.c").read_bytes()
    tag = f"aas-rig/pause:{_digest(source)}"
    if _image_exists(tag):
        return tag
    with phase("image pause (cold)"):
        build = CACHE / "images" / "pause-build"
        shutil.rmtree(build, ignore_errors=True)
        (build / "rootfs").mkdir(parents=True)
        subprocess.run(
            [
                "gcc",
                "-static",
                "-Os",
                "-s",
                "-o",
                str(build / "rootfs" / "pause"),
                str(NODE_FILES / "pause.c"),
            ],
            check=True,
        )
        tar = subprocess.run(
            ["tar", "-C", str(build / "rootfs"), "-c", "."], capture_output=True, check=True
        ).stdout
        docker("import", "-c", 'ENTRYPOINT ["/pause"]', "-", tag, input=tar)
        shutil.rmtree(build, ignore_errors=True)
    return tag


def _unmount_below(path: Path) -> None:
    """debootstrap mounts /proc (and more) inside the tree; a failed run can leave them."""
    points = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(f"{path}/")
    ]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _debootstrap(path: Path) -> None:
    try:
        _debootstrap_into(path)
    finally:
        _unmount_below(path)


def _debootstrap_into(path: Path) -> None:
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PYBASE_PACKAGES)}",
            DEBIAN_SUITE,
            str(path),
            DEBIAN_MIRROR,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # What python:3.11-slim also leaves out: package caches and lists.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (path / leftover).glob("*"):
            if item.is_file():
                item.unlink()


def pybase_image() -> str:
    """The debootstrap base, plus this machine's extra CA certificates (rig-only image)."""
    extra_cas = sorted(EXTRA_CA_DIR.glob("*.crt"))
    rootfs = cached(
        CACHE
        / "images"
        / f"debootstrap-{DEBIAN_SUITE}-{_digest(*(p.encode() for p in PYBASE_PACKAGES))}",
        _debootstrap,
        name=f"debootstrap {DEBIAN_SUITE} minbase + python3",
    )
    digest = _digest(rootfs.name.encode(), *(p.read_bytes() for p in extra_cas))
    tag = f"aas-rig/pybase:{DEBIAN_SUITE}-{digest}"
    if _image_exists(tag):
        return tag
    with phase("image pybase (cold)"):
        staged = CACHE / "images" / "pybase-stage"
        shutil.rmtree(staged, ignore_errors=True)
        subprocess.run(["cp", "-a", str(rootfs), str(staged)], check=True)
        try:
            for ca in extra_cas:
                shutil.copy(ca, staged / "usr/local/share/ca-certificates" / ca.name)
            if extra_cas:
                subprocess.run(
                    ["chroot", str(staged), "update-ca-certificates"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            tar = subprocess.run(
                ["tar", "-C", str(staged), "--numeric-owner", "-c", "."],
                capture_output=True,
                check=True,
            ).stdout
            docker(
                "import",
                "-c",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-c",
                "ENV LANG=C.UTF-8",
                "-c",
                'CMD ["python3"]',
                "-",
                tag,
                input=tar,
            )
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return tag


def _project_inputs_digest() -> str:
    """What the Dockerfile copies (see .dockerignore), so a code change rebuilds the image."""
    files = [ROOT / "Dockerfile", ROOT / "pyproject.toml", ROOT / "requirements" / "runtime.lock"]
    files += sorted(p for p in (ROOT / "operator").rglob("*.py") if "__pycache__" not in p.parts)
    return _digest(*(str(p.relative_to(ROOT)).encode() + p.read_bytes() for p in files))


def project_image(base: str) -> str:
    """``docker build`` of the project's Dockerfile on ``base``, tagged by its inputs."""
    tag = f"airflow-asset-sync:rig-{_project_inputs_digest()}"
    if _image_exists(tag):
        log(f"image {tag}: cached")
        return tag
    with phase("image airflow-asset-sync (docker build)"):
        # The legacy builder (Debian's docker.io has no buildx) skips the `# syntax=` line
        # that BuildKit would try to pull; the host network reaches PyPI.
        docker(
            "build",
            "--network=host",
            "--build-arg",
            f"BASE={base}",
            "-t",
            tag,
            str(ROOT),
            timeout_s=1200,
        )
    return tag


def build_all() -> dict[str, str]:
    """Every image the cluster needs, by role (provisioning calls this with dockerd up)."""
    return {"pause": pause_image(), "project": project_image(pybase_image())}


def import_into(containerd_socket: Path, tags: list[str]) -> None:
    """Copy images from Docker into the cluster's containerd (namespace k8s.io)."""
    ctr = ["ctr", "-a", str(containerd_socket), "-n", "k8s.io"]
    present = subprocess.run(
        [*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout.split()
    for tag in tags:
        ref = tag if "/" in tag.split(":")[0] else f"library/{tag}"
        if f"docker.io/{ref}" in present:
            continue
        started = time.monotonic()
        with subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE) as save:
            subprocess.run(
                [*ctr, "images", "import", "-"],
                stdin=save.stdout,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        if save.returncode != 0:
            raise ProcessFailed(f"docker save {tag} failed ({save.returncode})")
        log(f"imported {tag} into the cluster's containerd in {time.monotonic() - started:.1f}s")
