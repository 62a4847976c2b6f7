"""Build the rig's Go binaries (Kubernetes, etcd, helm, CoreDNS) from the Go module proxy.

Each binary comes from a wrapper module under `tools/rig/gomod/` that pins its version
(k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces staging modules with local
paths). Go's module and build caches live inside the rig cache, so a warm rebuild after a
version bump recompiles only what changed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rig.cache import CACHE, ROOT, cached

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.21.4"
COREDNS_VERSION = "v1.14.7"

#: What a node and its controllers need beyond the API server: built on demand (only the
#: real-cluster tests use them), from the same wrapper module and version as kube-apiserver.
K8S_NODE_COMMANDS = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy")

GOMOD = ROOT / "tools" / "rig" / "gomod"


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(CACHE / "go" / "mod"),
        GOCACHE=str(CACHE / "go" / "build"),
        CGO_ENABLED="0",
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
    )
    return env


def _go_build(module: str, out: Path, packages: list[str], ldflags: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["go", "build", "-trimpath", "-ldflags", f"-s -w {ldflags}", "-o", f"{out}/", *packages]
    subprocess.run(cmd, cwd=GOMOD / module, env=_go_env(), check=True)


def _k8s_ldflags() -> str:
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={K8S_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def kubernetes() -> Path:
    """kube-apiserver and a kubectl of the same minor version (the preinstalled one is older)."""
    return cached(
        CACHE / "bin" / f"k8s-{K8S_VERSION}",
        lambda tmp: _go_build(
            "kubernetes",
            tmp,
            ["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"],
            _k8s_ldflags(),
        ),
        name=f"kube-apiserver+kubectl {K8S_VERSION}",
    )


def etcd() -> Path:
    return cached(
        CACHE / "bin" / f"etcd-{ETCD_VERSION}",
        lambda tmp: _go_build("etcd", tmp, ["go.etcd.io/etcd/server/v3"], ""),
        name=f"etcd {ETCD_VERSION}",
    )


def helm() -> Path:
    return cached(
        CACHE / "bin" / f"helm-{HELM_VERSION}",
        lambda tmp: _go_build(
            "helm",
            tmp,
            ["helm.sh/helm/v3/cmd/helm"],
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        ),
        name=f"helm {HELM_VERSION}",
    )


def kubernetes_node() -> Path:
    """kubelet, kube-controller-manager, kube-scheduler and kube-proxy, same version as the API."""
    return cached(
        CACHE / "bin" / f"k8s-node-{K8S_VERSION}",
        lambda tmp: _go_build(
            "kubernetes",
            tmp,
            [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in K8S_NODE_COMMANDS],
            _k8s_ldflags(),
        ),
        name=f"kubelet+controllers+proxy {K8S_VERSION}",
    )


def coredns() -> Path:
    """The cluster DNS (CoreDNS is a plain Go module; its main package is the module root)."""
    return cached(
        CACHE / "bin" / f"coredns-{COREDNS_VERSION}",
        lambda tmp: _go_build(
            "coredns",
            tmp,
            ["github.com/coredns/coredns"],
            f"-X github.com/coredns/coredns/coremain.GitCommit={COREDNS_VERSION}",
        ),
        name=f"coredns {COREDNS_VERSION}",
    )


def kube_node_bin(command: str) -> Path:
    if command not in K8S_NODE_COMMANDS:
        raise ValueError(f"{command!r} is not one of {K8S_NODE_COMMANDS}")
    return kubernetes_node() / command


def coredns_bin() -> Path:
    return coredns() / "coredns"


def kube_apiserver_bin() -> Path:
    return kubernetes() / "kube-apiserver"


def kubectl_bin() -> Path:
    return kubernetes() / "kubectl"


def etcd_bin() -> Path:
    # `go build go.etcd.io/etcd/server/v3` names the binary after the last path element.
    out = etcd()
    for name in ("etcd", "v3", "server"):
        if (out / name).exists():
            return out / name
    raise FileNotFoundError(f"no etcd binary in {out}")


def helm_bin() -> Path:
    return helm() / "helm"
