"""A real kube-apiserver backed by a real etcd, started the way controller-runtime's envtest does.

Authentication is by client certificates from a CA the rig makes (`rig.pki`): an admin
identity (O=system:masters) for the tests, and `mint()` for any other user or ServiceAccount
identity, so RBAC is exercised for real. The API server runs RBAC authorization and its
default admission chain (PodSecurity included), minus the ServiceAccount plugin (no token
controller runs here).

What a bare API server does not do: run pods, garbage-collect owned objects, finish namespace
deletion, or turn Deployments into ReplicaSets. Tests assert on objects, and act as the kubelet
for our own worker Deployments where they need a worker running.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from rig import gobuild, pki
from rig.cache import log, phase
from rig.procs import Server, free_port


@dataclass
class KubeRig:
    """The running control plane and how to reach it."""

    workdir: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    port: int = field(default_factory=free_port)
    etcd: Server | None = None
    apiserver: Server | None = None
    ca: pki.CertificateAuthority | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def kubectl_bin(self) -> Path:
        return gobuild.kubectl_bin()

    def start(self) -> None:
        with phase("kube: provision etcd, kube-apiserver, kubectl"):
            etcd_bin = gobuild.etcd_bin()
            apiserver_bin = gobuild.kube_apiserver_bin()
            gobuild.kubectl_bin()
        with phase("kube: start etcd + kube-apiserver"):
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.ca = pki.CertificateAuthority.create("airflow-asset-sync-rig-ca")
            certs = self.workdir / "pki"
            certs.mkdir(exist_ok=True)
            self.ca.write(certs / "ca.crt", certs / "ca.key")
            server_cert, server_key = self.ca.issue(
                "kube-apiserver", groups=[], server_names=self.apiserver_server_names()
            )
            (certs / "apiserver.crt").write_bytes(server_cert)
            (certs / "apiserver.key").write_bytes(server_key)
            sa_pub, sa_key = pki.rsa_keypair()
            (certs / "sa.pub").write_bytes(sa_pub)
            (certs / "sa.key").write_bytes(sa_key)
            self.extra_certs(certs)

            self.etcd = Server(
                "etcd",
                [
                    str(etcd_bin),
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                    f"--initial-cluster=default=http://127.0.0.1:{self.etcd_peer_port}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                log_path=self.workdir / "etcd.log",
            )
            self.etcd.start()
            self.etcd.wait_ready(self._etcd_healthy, timeout_s=60, what="healthy")
            self.apiserver = Server(
                "kube-apiserver",
                [str(apiserver_bin), *self.apiserver_args(certs)],
                log_path=self.workdir / "kube-apiserver.log",
            )
            self.apiserver.start()
            self.write_kubeconfig(self.kubeconfig, "admin", ["system:masters"])
            self.apiserver.wait_ready(
                self._api_ready, timeout_s=120, what="serving namespace default"
            )
        log(f"kube-apiserver {self.server} kubeconfig={self.kubeconfig}")

    def apiserver_server_names(self) -> list[str]:
        return ["localhost", "127.0.0.1"]

    def extra_certs(self, certs: Path) -> None:
        """Certificates a subclass needs beside the API server's own (none here)."""

    def apiserver_args(self, certs: Path) -> list[str]:
        """envtest's API server: RBAC only, and no ServiceAccount admission (no token
        controller runs here)."""
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{self.port}/",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--v=1",
        ]

    def stop(self) -> None:
        for server in (self.apiserver, self.etcd):
            if server is not None:
                server.stop()

    def restart_apiserver(self, *, down_s: float = 0.0) -> None:
        """Stop and start the API server on the same port and etcd (reliability tests)."""
        assert self.apiserver is not None
        self.apiserver.stop()
        if down_s:
            time.sleep(down_s)
        self.apiserver.start()
        self.apiserver.wait_ready(self._api_ready, timeout_s=120, what="serving after restart")

    # -- identities ---------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, user: str, groups: Sequence[str]) -> Path:
        assert self.ca is not None
        cert, key = self.ca.issue(user, groups=list(groups))
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "rig",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(self.ca.cert_pem).decode(),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": base64.b64encode(cert).decode(),
                        "client-key-data": base64.b64encode(key).decode(),
                    },
                }
            ],
            "contexts": [{"name": "rig", "context": {"cluster": "rig", "user": user}}],
            "current-context": "rig",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def mint(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for any identity, e.g. a plain user or a ServiceAccount."""
        safe = user.replace(":", "_").replace("/", "_")
        return self.write_kubeconfig(self.workdir / f"{safe}.kubeconfig", user, groups)

    def mint_service_account(self, namespace: str, name: str) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (RBAC matches it by username)."""
        return self.mint(
            f"system:serviceaccount:{namespace}:{name}",
            [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
        )

    # -- kubectl --------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout_s: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig or self.kubeconfig))
        result = subprocess.run(
            [str(self.kubectl_bin), *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def get_json(self, *args: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.kubectl("get", "-o", "json", *args).stdout)
        return data

    # -- readiness ----------------------------------------------------------------------

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=2) as r:
            return bool(json.loads(r.read()).get("health") == "true")

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.ca is not None
        ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        cert, key = self.ca.issue("rig-probe", groups=["system:masters"])
        with (
            tempfile.NamedTemporaryFile("wb", delete=False) as c,
            tempfile.NamedTemporaryFile("wb", delete=False) as k,
        ):
            c.write(cert)
            k.write(key)
        try:
            ctx.load_cert_chain(c.name, k.name)
        finally:
            os.unlink(c.name)
            os.unlink(k.name)
        return ctx

    def _api_ready(self) -> bool:
        ctx = self._ssl_context()
        with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=3) as r:
            if r.status != 200:
                return False
        with urllib.request.urlopen(
            f"{self.server}/api/v1/namespaces/default", context=ctx, timeout=3
        ) as r:
            return bool(r.status == 200)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeRig]:
    """A real kube-apiserver + etcd for the whole session, started on first use."""
    rig = KubeRig(workdir=tmp_path_factory.mktemp("kube"))
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()
