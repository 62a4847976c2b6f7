"""Push-assisted polling on the real cluster (issue 13): the worker's Service, its poke URL
in status, and a poke sent to that URL from inside the cluster (through CoreDNS and
kube-proxy, to the worker pod the kubelet runs) making the worker read the source now.

Why `pollInterval: 1h`: without the poke the worker would read an event made after its
first poll only an hour later (the adaptive pace goes down to 12 minutes), so the event
arriving within a minute proves the poke, and nothing else, made it read. The listener
plugin itself is tested in real Airflow sources in `tests/integration/test_push_real.py`;
here the poke is the plugin's request (POST, bearer token, empty body), sent with urllib,
as the plugin sends it, from a pod: the operator's (it has Python and cluster DNS).

One test: the cluster is expensive.
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from rig.airflow import AirflowInstance, AssetPool
from rig.cluster import ClusterRig
from rig.sync import await_delivery, marker_counts
from support import live, pods
from support.pods import OPERATOR_NS, OPERATOR_SELECTOR, restricted_namespace
from support.release import Release
from support.stream import note

pytestmark = [pytest.mark.rig, pytest.mark.slow]

TOKEN = "rig-pods-poke-Tok-3e7b21"

#: Run in the operator pod: POST each URL given on the command line with the token read
#: from stdin (never on a command line), print one "status" per line. A GET of /metrics
#: the same way, so the test reads the worker's counters through the Service too.
CLIENT = textwrap.dedent(
    """\
    import sys, urllib.request, urllib.error
    token = sys.stdin.read().strip()
    method, url = sys.argv[1], sys.argv[2]
    headers = {"Authorization": "Bearer " + token} if method == "POST" else {}
    data = b"" if method == "POST" else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            print(r.status)
            print(r.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code)
    """
)


def _in_cluster(
    cluster: ClusterRig, method: str, url: str, *, token: str = TOKEN
) -> tuple[int, str]:
    operator = pods.one_ready_pod(cluster, OPERATOR_NS, OPERATOR_SELECTOR)
    out = cluster.kubectl(
        "exec", "-i", "-n", OPERATOR_NS, operator["metadata"]["name"], "--",
        "python", "-c", CLIENT, method, url,
        input=token,
    ).stdout  # fmt: skip
    status, _, body = out.partition("\n")
    return int(status), body


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        if line.startswith("#") or metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def test_a_poke_to_the_services_url_from_a_pod_makes_the_worker_pod_read_now(
    cluster: ClusterRig,
    operator_release: Release,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
) -> None:
    ns = restricted_namespace(cluster, "push")
    (uri,) = assets.take(1)
    for name, instance in (("src", airflow3), ("dst", airflow3b)):
        cluster.kubectl(
            "-n", ns, "create", "secret", "generic", name,
            f"--from-literal=username={instance.username}",
            f"--from-literal=password={instance.password}",
        )  # fmt: skip
    cluster.kubectl(
        "-n", ns, "create", "secret", "generic", "poke", f"--from-literal=token={TOKEN}"
    )
    sync = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": "pushed", "namespace": ns},
        "spec": {
            "source": {
                "url": airflow3.pods_url,
                "auth": {"password": {"secretName": "src"}},
                "push": {"token": {"secretName": "poke"}},
            },
            "targets": [
                {
                    "name": "t",
                    "url": airflow3b.pods_url,
                    "auth": {"password": {"secretName": "dst"}},
                }
            ],
            "assets": {"include": [{"glob": uri}]},
            "pollInterval": "1h",
            "startFrom": "latest",
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sync))
    cluster.wait_for("--for=condition=Ready", "aas/pushed", namespace=ns, timeout_s=180)
    worker = pods.one_ready_pod(
        cluster, ns, "app.kubernetes.io/component=worker,app.kubernetes.io/instance=pushed"
    )

    # The Service: the operator's, selecting the worker pod, its endpoint the pod's IP.
    service = live.get_any(cluster, "service", "pushed-worker", "-n", ns)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["ownerReferences"][0]["kind"] == "AirflowAssetSync"
    labels = worker["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    (port,) = service["spec"]["ports"]
    slices = json.loads(
        cluster.kubectl(
            "-n",
            ns,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=pushed-worker",
            "-o",
            "json",
        ).stdout
    )["items"]
    addresses = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert addresses == {worker["status"]["podIP"]}, slices

    poke_url = live.wait_for(
        lambda: (live.get(cluster, pods.AAS, "pushed", ns) or {}).get("status", {}).get("pokeUrl"),
        what="status.pokeUrl",
        timeout_s=60,
    )
    assert poke_url == f"http://pushed-worker.{ns}.svc:{port['port']}/poke"
    metrics_url = poke_url.removesuffix("/poke") + "/metrics"

    # The worker's first poll is behind it (startFrom: latest): only a poke reads again.
    def first_poll_done() -> str | None:
        status, text = _in_cluster(cluster, "GET", metrics_url)
        polled = _metric(text, "aas_api_request_duration_seconds_count", role="source")
        return text if status == 200 and polled >= 1 else None

    before = live.wait_for(first_poll_done, what="the worker's first poll", timeout_s=60)
    assert _metric(before, "aas_poke_polls_total") == 0
    event = airflow3.create_event(uri, {"via": "poke from a pod"})
    assert marker_counts(airflow3b, [uri], airflow3.pods_url) == {}

    t0 = time.monotonic()
    status, _ = _in_cluster(cluster, "POST", poke_url)
    assert status == 202
    counts = await_delivery(airflow3b, [uri], airflow3.pods_url, {event["id"]}, timeout_s=60)
    arrived_s = time.monotonic() - t0
    assert counts == {event["id"]: 1}

    _, after = _in_cluster(cluster, "GET", metrics_url)
    assert _metric(after, "aas_pokes_total", result="accepted") == 1
    assert _metric(after, "aas_poke_polls_total") >= 1
    # A forged token is refused and counted, through the same Service, and wakes nothing.
    status, _ = _in_cluster(cluster, "POST", poke_url, token="forged")
    assert status == 403
    _, last = _in_cluster(cluster, "GET", metrics_url)
    assert _metric(last, "aas_pokes_total", result="forbidden") == 1
    assert _metric(last, "aas_poke_polls_total") == _metric(after, "aas_poke_polls_total")
    log = pods.logs(cluster, ns, worker["metadata"]["name"])
    assert TOKEN not in log
    assert TOKEN not in json.dumps(live.get(cluster, pods.AAS, "pushed", ns))
    note("push-on-pods", poke_url=poke_url, poke_to_target_s=round(arrived_s, 2))
