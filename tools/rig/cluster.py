"""A real single-node Kubernetes cluster on this machine: pods run, from locally built images.

What ``KubeRig`` (``rig.kube``) does not have, this adds: a kubelet on containerd (CRI), the
controller manager (ReplicaSets, garbage collection, namespace deletion, ServiceAccount
tokens), the scheduler, kube-proxy (ClusterIP Services) and CoreDNS (Service names resolve in
pods). Every binary is built from the Go module proxy (``rig.gobuild``), every image on this
machine (``rig.images``); the recipe it follows is ``shared/reference/real-cluster``.

Host settings that mattered, and why:

- containerd runs with ``restrict_oom_score_adj``: these machines lack CAP_SYS_RESOURCE, so
  runc cannot give the pause container its oom_score_adj of -998.
- Pods sit on the bridge ``cni-pods0`` (``POD_CIDR``, no masquerade: pods only talk to the
  host and to each other). The CNI ``firewall`` plugin accepts their forwarded traffic even
  where Docker set the FORWARD policy to DROP.
- Every rig server listens on 127.0.0.1 only. Pods reach them at the bridge's gateway address
  (``GATEWAY``): one DNAT rule sends pod traffic for the gateway to loopback, same port, with
  ``route_localnet`` on the bridge. So Airflow and Kafka need no other bind address; Kafka
  advertises a listener at the gateway for pods (``rig.kafka``).
- The API server is reached from pods the standard way, as the ``kubernetes`` ClusterIP
  (``API_CLUSTER_IP:443``), by a DNAT rule placed ahead of kube-proxy's (kube-proxy would
  send it to the advertised address, where nothing listens).
- The node is called ``localhost`` and the API server prefers Hostname addresses, so logs,
  exec and port-forward reach the kubelet on loopback (a kubelet refuses a loopback node IP,
  hence the placeholder ``NODE_IP``).
- CoreDNS runs on the host like the control plane, on loopback; pods' resolv.conf names the
  gateway, which the DNAT rules send to it.

Only one cluster can run on a machine at a time (the bridge, CIDRs and iptables rules are
host-wide), so a lock file guards it. ``stop()`` undoes everything: processes, mounts,
network namespaces, the bridge, iptables rules and the paths the kubelet hard-codes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from rig import gobuild, images
from rig.cache import log, phase
from rig.kube import KubeRig
from rig.procs import ProcessFailed, Server, free_port

POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.0.0.0/24"
API_CLUSTER_IP = "10.0.0.1"
NODE_NAME = "localhost"
NODE_IP = "192.0.2.2"  # TEST-NET-1: never routed; only satisfies the kubelet
BRIDGE = "cni-pods0"
CNI_BIN_DIR = Path("/usr/lib/cni")
LOCK = Path("/run/airflow-asset-sync-rig-cluster.lock")
RULE_COMMENT = "airflow-asset-sync-rig"

#: Paths outside the work dir that the kubelet and the CNI plugins write regardless of flags.
HARD_CODED_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/var/lib/cni"),
    Path("/usr/libexec/kubernetes"),
)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _iptables(*args: str, check: bool = False) -> bool:
    return _run("iptables", *args, check=check).returncode == 0


@dataclass
class ClusterRig(KubeRig):
    """A `KubeRig` whose API server has a node, controllers, a proxy and DNS behind it."""

    images: dict[str, str] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    containerd_stream_port: int = field(default_factory=free_port)
    kubelet_port: int = field(default_factory=free_port)
    kubelet_healthz_port: int = field(default_factory=free_port)
    kcm_port: int = field(default_factory=free_port)
    scheduler_port: int = field(default_factory=free_port)
    proxy_healthz_port: int = field(default_factory=free_port)
    proxy_metrics_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    _lock: IO[str] | None = None

    # -- what tests use --------------------------------------------------------------------

    @property
    def project_image(self) -> str:
        return self.images["project"]

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def ctr(self, *args: str) -> str:
        return _run("ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", *args).stdout

    def wait_for(self, *args: str, timeout_s: float = 120, namespace: str | None = None) -> None:
        """``kubectl wait`` (the condition is the kubelet's and the controllers' to meet)."""
        ns = ["-n", namespace] if namespace else []
        self.kubectl("wait", *ns, *args, f"--timeout={int(timeout_s)}s", timeout_s=timeout_s + 30)

    # -- start --------------------------------------------------------------------------------

    def apiserver_args(self, certs: Path) -> list[str]:
        """A real cluster's API server: Node+RBAC authorization, the default admission chain
        (ServiceAccount and PodSecurity included), kubelet client certs, SA tokens for pods."""
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.port}",
            "--bind-address=127.0.0.1",
            f"--advertise-address={GATEWAY}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            f"--kubelet-client-certificate={certs / 'kubelet-client.crt'}",
            f"--kubelet-client-key={certs / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=Hostname,InternalIP",
            "--v=1",
        ]

    def apiserver_server_names(self) -> list[str]:
        return [
            "localhost",
            "127.0.0.1",
            API_CLUSTER_IP,
            GATEWAY,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]

    def extra_certs(self, certs: Path) -> None:
        assert self.ca is not None
        for name, cn, groups in (
            ("kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"]),
        ):
            cert, key = self.ca.issue(cn, groups=groups)
            (certs / f"{name}.crt").write_bytes(cert)
            (certs / f"{name}.key").write_bytes(key)
        cert, key = self.ca.issue(NODE_NAME, groups=[], server_names=[NODE_NAME, "127.0.0.1"])
        (certs / "kubelet-serving.crt").write_bytes(cert)
        (certs / "kubelet-serving.key").write_bytes(key)

    def start(self) -> None:
        self._take_lock()
        started = time.monotonic()
        try:
            with phase("cluster: provision node binaries and images"):
                node_dir = gobuild.kubernetes_node()
                node_bins = {cmd: node_dir / cmd for cmd in gobuild.K8S_NODE_COMMANDS}
                coredns = gobuild.coredns_bin()
            self.workdir.mkdir(parents=True, exist_ok=True)
            with images.docker_daemon(self.workdir):
                with phase("cluster: images"):
                    self.images = images.build_all()
                with phase("cluster: containerd + image import"):
                    self._start_containerd()
                    images.import_into(self.containerd_socket, list(self.images.values()))
            super().start()
            with phase("cluster: controllers, kubelet, kube-proxy, CoreDNS"):
                self._prepare_bridge()
                self._start_controllers(node_bins)
                self._start_kubelet(node_bins["kubelet"])
                self._start_proxy(node_bins["kube-proxy"])
                self._start_coredns(coredns)
                self._route_pods_to_host()
                self.wait_for("--for=condition=Ready", f"node/{NODE_NAME}", timeout_s=120)
                self._wait_default_service_account()
            log(f"cluster up in {time.monotonic() - started:.1f}s (kubeconfig {self.kubeconfig})")
        except BaseException:
            self.stop()
            raise

    def _take_lock(self) -> None:
        self._lock = LOCK.open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProcessFailed(f"another rig cluster runs on this machine ({LOCK})") from None

    def _server(self, name: str, argv: list[str], ready: Any, *, timeout_s: float = 90) -> Server:
        server = Server(name, argv, log_path=self.workdir / f"{name}.log")
        server.start()
        self.servers[name] = server
        server.wait_ready(ready, timeout_s=timeout_s, what="healthy")
        return server

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.toml"
        config.write_text(
            CONTAINERD_CONFIG.format(
                root=root,
                socket=self.containerd_socket,
                stream_port=self.containerd_stream_port,
                pause=_ref(images.pause_image()),
                cni_bin=CNI_BIN_DIR,
                cni_conf=self.workdir / "cni" / "net.d",
            )
        )
        net_d = self.workdir / "cni" / "net.d"
        net_d.mkdir(parents=True, exist_ok=True)
        (net_d / "10-pods.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        self._server(
            "containerd",
            ["containerd", "--config", str(config)],
            lambda: _run("ctr", "-a", str(self.containerd_socket), "version").returncode == 0,
        )

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "0.4.0",
            "name": "pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                        "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "firewall", "backend": "iptables"},
                {"type": "loopback"},
            ],
        }

    def _kubeconfig_for(self, name: str, user: str, groups: list[str]) -> Path:
        return self.write_kubeconfig(self.workdir / f"{name}.kubeconfig", user, groups)

    def _start_controllers(self, bins: dict[str, Path]) -> None:
        certs = self.workdir / "pki"
        kcm = self._kubeconfig_for("kcm", "system:kube-controller-manager", [])
        self._server(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={kcm}",
                f"--authentication-kubeconfig={kcm}",
                f"--authorization-kubeconfig={kcm}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                "--leader-elect=false",
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={certs / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-bootstrapsigner,-tokencleaner,-csrsigning,-nodeipam",
                "--v=1",
            ],
            lambda: _healthz(f"https://127.0.0.1:{self.kcm_port}/healthz"),
        )
        scheduler = self._kubeconfig_for("scheduler", "system:kube-scheduler", [])
        self._server(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                "--leader-elect=false",
                "--v=1",
            ],
            lambda: _healthz(f"https://127.0.0.1:{self.scheduler_port}/healthz"),
        )

    def _start_kubelet(self, kubelet: Path) -> None:
        certs = self.workdir / "pki"
        config = self.workdir / "kubelet-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": "127.0.0.1",
                    "port": self.kubelet_port,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": self.kubelet_healthz_port,
                    "tlsCertFile": str(certs / "kubelet-serving.crt"),
                    "tlsPrivateKeyFile": str(certs / "kubelet-serving.key"),
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(certs / "ca.crt")},
                    },
                    "authorization": {"mode": "Webhook"},
                    "cgroupDriver": "cgroupfs",
                    "failSwapOn": False,
                    "failCgroupV1": False,
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "imageServiceEndpoint": f"unix://{self.containerd_socket}",
                    "podLogsDir": str(self.workdir / "pod-logs"),
                    "volumePluginDir": str(self.workdir / "kubelet-plugins"),
                    "clusterDomain": "cluster.local",
                    "clusterDNS": [GATEWAY],
                    "resolvConf": "/etc/resolv.conf",
                    "serializeImagePulls": False,
                    "imageGCHighThresholdPercent": 100,
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "maxPods": 60,
                    # The reliability tests delete pods; the default 30 s grace is theirs to set.
                    "shutdownGracePeriod": "0s",
                }
            )
        )
        node = self._kubeconfig_for("kubelet", f"system:node:{NODE_NAME}", ["system:nodes"])
        self._server(
            "kubelet",
            [
                str(kubelet),
                f"--config={config}",
                f"--kubeconfig={node}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
            lambda: _healthz(f"http://127.0.0.1:{self.kubelet_healthz_port}/healthz"),
            timeout_s=120,
        )

    def _start_proxy(self, proxy: Path) -> None:
        kubeconfig = self._kubeconfig_for("proxy", "system:kube-proxy", [])
        self._server(
            "kube-proxy",
            [
                str(proxy),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_CIDR}",
                f"--metrics-bind-address=127.0.0.1:{self.proxy_metrics_port}",
                f"--healthz-bind-address=127.0.0.1:{self.proxy_healthz_port}",
                "--conntrack-max-per-core=0",
                "--v=1",
            ],
            lambda: (
                _healthz(f"http://127.0.0.1:{self.proxy_healthz_port}/healthz")
                and "KUBE-SERVICES" in _run("iptables", "-t", "nat", "-S", "PREROUTING").stdout
            ),
        )

    def _start_coredns(self, coredns: Path) -> None:
        kubeconfig = self._kubeconfig_for("coredns", "coredns", ["system:masters"])
        corefile = self.workdir / "Corefile"
        corefile.write_text(COREFILE.format(port=self.dns_port, kubeconfig=kubeconfig))
        self._server(
            "coredns",
            [str(coredns), "-conf", str(corefile)],
            lambda: _dns_answers(self.dns_port),
        )

    def _prepare_bridge(self) -> None:
        """Create the pods' bridge before the first pod, so route_localnet can be set on it
        (the CNI bridge plugin adopts an existing bridge and adds its gateway address)."""
        if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        _run("sysctl", "-qw", f"net.ipv4.conf.{BRIDGE}.route_localnet=1")
        _run("sysctl", "-qw", "net.ipv4.ip_forward=1")

    def _route_pods_to_host(self) -> None:
        """DNAT rules: the API ClusterIP to the loopback API server; DNS at the gateway to
        CoreDNS; any other TCP port at the gateway to the same port on loopback."""
        for rule in self._nat_rules():
            _iptables("-t", "nat", "-D", "PREROUTING", *rule)
        for rule in reversed(self._nat_rules()):
            _iptables("-t", "nat", "-I", "PREROUTING", "1", *rule, check=True)

    def _nat_rules(self) -> list[list[str]]:
        common = ["-s", POD_CIDR, "-m", "comment", "--comment", RULE_COMMENT, "-j", "DNAT"]
        return [
            ["-d", f"{API_CLUSTER_IP}/32", "-p", "tcp", "--dport", "443", *common,
             "--to-destination", f"127.0.0.1:{self.port}"],
            ["-d", f"{GATEWAY}/32", "-p", "udp", "--dport", "53", *common,
             "--to-destination", f"127.0.0.1:{self.dns_port}"],
            ["-d", f"{GATEWAY}/32", "-p", "tcp", "--dport", "53", *common,
             "--to-destination", f"127.0.0.1:{self.dns_port}"],
            ["-d", f"{GATEWAY}/32", "-p", "tcp", *common, "--to-destination", "127.0.0.1"],
        ]  # fmt: skip

    def _wait_default_service_account(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise ProcessFailed("the controller manager never made the default ServiceAccount")

    # -- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        for name in ("coredns", "kube-proxy", "kubelet"):
            if name in self.servers:
                self.servers[name].stop()
        self._remove_containers()
        for name in ("kube-scheduler", "kube-controller-manager"):
            if name in self.servers:
                self.servers[name].stop()
        super().stop()
        if "containerd" in self.servers:
            self.servers["containerd"].stop()
        self._clean_host()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _remove_containers(self) -> None:
        if "containerd" not in self.servers or not self.servers["containerd"].running:
            return
        with contextlib.suppress(Exception):
            for task in self.ctr("tasks", "ls", "-q").split():
                _run(
                    "ctr",
                    "-a",
                    str(self.containerd_socket),
                    "-n",
                    "k8s.io",
                    "tasks",
                    "kill",
                    "-s",
                    "KILL",
                    task,
                    check=False,
                )
            deadline = time.monotonic() + 20
            while self.ctr("tasks", "ls", "-q").split() and time.monotonic() < deadline:
                for task in self.ctr("tasks", "ls", "-q").split():
                    _run(
                        "ctr",
                        "-a",
                        str(self.containerd_socket),
                        "-n",
                        "k8s.io",
                        "tasks",
                        "rm",
                        "-f",
                        task,
                        check=False,
                    )
                time.sleep(0.2)
            for container in self.ctr("containers", "ls", "-q").split():
                _run(
                    "ctr",
                    "-a",
                    str(self.containerd_socket),
                    "-n",
                    "k8s.io",
                    "containers",
                    "rm",
                    container,
                    check=False,
                )

    def _clean_host(self) -> None:
        # kube-proxy's chains, then ours, the CNI firewall plugin's, the kubelet's.
        with contextlib.suppress(Exception):
            proxy = gobuild.kube_node_bin("kube-proxy")
            _run(str(proxy), "--cleanup", check=False)
        for rule in self._nat_rules():
            while _iptables("-t", "nat", "-D", "PREROUTING", *rule):
                pass
        _iptables(
            "-D",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "CNI firewall plugin rules",
            "-j",
            "CNI-FORWARD",
        )
        for chain in ("CNI-FORWARD", "CNI-ADMIN"):
            _iptables("-F", chain)
            _iptables("-X", chain)
        for tool in ("iptables", "ip6tables"):
            for chain_rule in (("INPUT", "KUBE-FIREWALL"), ("OUTPUT", "KUBE-FIREWALL")):
                _run(tool, "-D", chain_rule[0], "-j", chain_rule[1], check=False)
            for table, chain in (
                ("filter", "KUBE-FIREWALL"),
                ("filter", "KUBE-KUBELET-CANARY"),
                ("nat", "KUBE-KUBELET-CANARY"),
                ("mangle", "KUBE-KUBELET-CANARY"),
                ("mangle", "KUBE-IPTABLES-HINT"),
            ):
                _run(tool, "-t", table, "-F", chain, check=False)
                _run(tool, "-t", table, "-X", chain, check=False)
        # Mounts under the work dir (the kubelet's rshared root, token tmpfs, rootfs),
        # deepest first.
        mounts = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4]
                if point.startswith(str(self.workdir)) or point.startswith("/run/netns/cni-"):
                    mounts.append(point)
        for point in sorted(mounts, reverse=True):
            _run("umount", "-l", point, check=False)
        netns = Path("/run/netns")
        if netns.is_dir():
            for ns in netns.glob("cni-*"):
                with contextlib.suppress(OSError):
                    ns.unlink()
            with contextlib.suppress(OSError):
                netns.rmdir()
        _run("ip", "link", "del", BRIDGE, check=False)
        for path in HARD_CODED_PATHS:
            _run("rm", "-rf", str(path), check=False)


def _ref(tag: str) -> str:
    """The containerd reference Docker's short name stands for."""
    name = tag.split(":")[0]
    return f"docker.io/{tag}" if "/" in name else f"docker.io/library/{tag}"


def _healthz(url: str) -> bool:
    return _run("curl", "-sfk", "--max-time", "2", url, check=False).returncode == 0


def _dns_answers(port: int, name: str = "kubernetes.default.svc.cluster.local") -> bool:
    """True once CoreDNS answers an A query for ``name`` (its kubernetes plugin has synced
    with the API server): one hand-made DNS query over UDP."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query, ("127.0.0.1", port))
        reply = sock.recv(512)
    answers: int = struct.unpack(">H", reply[6:8])[0]
    return answers >= 1


CONTAINERD_CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = "{root}/debug.sock"
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{pause}"
    stream_server_address = "127.0.0.1"
    stream_server_port = "{stream_port}"
    enable_selinux = false
    # These machines lack CAP_SYS_RESOURCE: runc cannot set the pause container's
    # oom_score_adj of -998 and fails with "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{cni_bin}"
      conf_dir = "{cni_conf}"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
  [plugins."io.containerd.internal.v1.opt"]
    path = "{root}/opt"
"""

COREFILE = """\
.:{port} {{
    bind 127.0.0.1
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    """A real single-node cluster for the session, started on first use, torn down after."""
    rig = ClusterRig(workdir=tmp_path_factory.mktemp("cluster"))
    rig.start()
    try:
        yield rig
    finally:
        rig.stop()


def provision_binaries() -> None:
    """kubelet, controllers, kube-proxy and CoreDNS (CPU-bound Go builds)."""
    gobuild.kubernetes_node()
    gobuild.coredns()


def provision_images() -> dict[str, str]:
    """The pause, base and project images (mostly downloads and dpkg: overlaps a Go build)."""
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "aas-rig-provision"
    workdir.mkdir(parents=True, exist_ok=True)
    with images.docker_daemon(workdir):
        return images.build_all()


def provision() -> dict[str, str]:
    """Build the cluster's binaries and images (``python -m rig.provision cluster``)."""
    provision_binaries()
    return provision_images()
