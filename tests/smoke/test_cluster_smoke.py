"""The rig's cluster is a real one: the scheduler places pods, the kubelet runs them from the
locally built image, CoreDNS resolves Service names, kube-proxy routes ClusterIPs, pods reach
the API server in-cluster and the host's loopback servers at the gateway."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator

import pytest

from rig.cluster import GATEWAY, NODE_NAME, ClusterRig
from rig.kafka import KafkaBroker
from support import live

pytestmark = pytest.mark.rig

PROBE = textwrap.dedent(
    """\
    import json, os, socket, ssl, sys, time, urllib.request
    out = {}
    out["dns"] = socket.gethostbyname("web.smoke.svc.cluster.local")
    # kube-proxy programs a new Service's rules a moment after its endpoints are ready:
    # until then a connection to the ClusterIP goes nowhere. Retry for up to a minute.
    deadline = time.monotonic() + 60
    while True:
        try:
            out["service"] = urllib.request.urlopen("http://web/", timeout=5).status
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
    req = urllib.request.Request(
        "https://kubernetes.default.svc/version",
        headers={"Authorization": "Bearer " + open(f"{sa}/token").read()},
    )
    out["api"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
    host, port = sys.argv[1].split(":")
    socket.create_connection((host, int(port)), timeout=10).close()
    out["host"] = "reached"
    print(json.dumps(out))
    """
)


@pytest.fixture
def smoke_namespace(cluster: ClusterRig) -> Iterator[str]:
    """The test's namespace, deleted afterwards so its pods stop with it."""
    cluster.kubectl("create", "namespace", "smoke")
    yield "smoke"
    cluster.kubectl("delete", "namespace", "smoke", "--wait=false", check=False)


def test_pods_run_resolve_services_and_reach_the_api_and_the_host(
    cluster: ClusterRig, kafka: KafkaBroker, smoke_namespace: str
) -> None:
    node = live.get_any(cluster, "node", NODE_NAME)
    assert live.condition(node, "Ready")["status"] == "True"  # type: ignore[index]
    ns = smoke_namespace
    image = cluster.project_image
    web = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python", "-m", "http.server", "8080", "-d", "/opt"],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [web, service]}),
    )
    cluster.kubectl(
        "-n", ns, "rollout", "status", "deployment/web", "--timeout=120s", timeout_s=150
    )
    cluster.kubectl(
        "-n", ns, "wait", "endpointslice", "-l", "kubernetes.io/service-name=web",
        "--for=jsonpath={.endpoints[0].conditions.ready}=true", "--timeout=60s", timeout_s=90,
    )  # fmt: skip
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE, f"{GATEWAY}:{kafka.pods_port}"],
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(probe))

    def finished() -> str | None:
        pod = live.get(cluster, "pod", "probe", ns) or {}
        phase = pod.get("status", {}).get("phase")
        return str(phase) if phase in ("Succeeded", "Failed") else None

    phase = live.wait_for(finished, what="the probe pod to finish", timeout_s=120)
    out = cluster.kubectl("-n", ns, "logs", "probe").stdout
    assert phase == "Succeeded", out
    result = json.loads(out.strip().splitlines()[-1])
    cluster_ip = live.get_any(cluster, "service", "web", "-n", ns)["spec"]["clusterIP"]
    assert result == {
        "dns": cluster_ip,
        "service": 200,
        "api": "v1.34.4",
        "host": "reached",
    }
