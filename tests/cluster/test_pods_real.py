"""The product on a real cluster: the chart's operator pod, worker pods, the kubelet's probes.

Everything here runs in pods that the real kubelet starts from the image the project's
Dockerfile builds (`rig.cluster`): the operator installed with `helm install`, the worker
Deployments it makes, the ReplicaSets the controller manager makes from those. Airflow 2.11,
Airflow 3.3 and Kafka run on the host; pods reach them at the pod network's gateway.
Nothing in these tests plays a kubelet or a controller.
"""

from __future__ import annotations

import json
import textwrap
import time
from typing import Any

import pytest

from rig.airflow import CONSUMED, AirflowInstance, AssetPool
from rig.cluster import ClusterRig
from rig.kafka import KafkaBroker
from rig.sync import await_delivery
from support import chart, live, pods
from support.argocd import run_health
from support.packaging_tools import CHART
from support.pods import OPERATOR_NS, OPERATOR_SELECTOR, restricted_namespace
from support.release import Release
from support.stream import EventStream, Verdict, await_verdict, delivery, note, source_ids

pytestmark = [pytest.mark.rig, pytest.mark.slow]


def worker_selector(sync: str) -> str:
    return f"app.kubernetes.io/component=worker,app.kubernetes.io/instance={sync}"


def test_helm_installed_operator_pod_is_ready_under_restricted_pod_security(
    cluster: ClusterRig, operator_release: Release
) -> None:
    """The chart's operator pod, from the Dockerfile's image, Ready under `restricted`.

    Before the image had a passwd entry for its UID, kopf's peering id
    (`getpass.getuser()`) raised KeyError and the pod crash-looped: `one_ready_pod` and
    the restart count would fail here.
    """
    ns = live.get_any(cluster, "namespace", OPERATOR_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = pods.one_ready_pod(cluster, OPERATOR_NS, OPERATOR_SELECTOR)
    assert pods.restart_count(pod) == 0, pods.logs(cluster, OPERATOR_NS, pod["metadata"]["name"])
    assert pod["spec"]["containers"][0]["image"] == cluster.project_image
    who = cluster.kubectl(
        "exec",
        "-n",
        OPERATOR_NS,
        pod["metadata"]["name"],
        "--",
        "python",
        "-c",
        "import getpass, os; print(os.getuid(), getpass.getuser())",
    ).stdout.split()
    assert who == ["65532", "nonroot"]
    log = pods.logs(cluster, OPERATOR_NS, pod["metadata"]["name"])
    assert "Traceback" not in log, log[-3000:]


def _first_sync_yaml(source: AirflowInstance, target: AirflowInstance, kafka: str, uri: str) -> str:
    """The README's first sync, with this rig's URLs (as pods see them) and Kafka."""
    return textwrap.dedent(
        f"""\
        apiVersion: airflow-asset-sync.github.io/v1alpha1
        kind: AirflowAssetSync
        metadata:
          name: a-to-b
        spec:
          source: {{url: "{source.pods_url}", auth: {{basic: {{secretName: airflow-a}}}}}}
          targets:
            - name: b
              url: "{target.pods_url}"
              auth: {{password: {{secretName: airflow-b}}}}
          assets: {{include: [{{glob: "{uri}"}}]}}
          kafka: {{bootstrapServers: ["{kafka}"]}}
          pollInterval: 500ms
        """
    )


def test_readme_first_sync_on_pods_crosses_from_2_11_to_3_3_through_kafka(
    cluster: ClusterRig,
    operator_release: Release,
    airflow2: AirflowInstance,
    airflow3: AirflowInstance,
    kafka: KafkaBroker,
) -> None:
    ns = "data"
    cluster.kubectl("create", "namespace", ns)
    for name, instance in (("airflow-a", airflow2), ("airflow-b", airflow3)):
        cluster.kubectl(
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            name,
            f"--from-literal=username={instance.username}",
            f"--from-literal=password={instance.password}",
        )
    uri, dag_id = CONSUMED[5], "consume_c5"
    cluster.kubectl(
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=_first_sync_yaml(airflow2, airflow3, kafka.pods_bootstrap, uri),
    )
    started = time.monotonic()
    cluster.wait_for("--for=condition=Ready", "aas/a-to-b", namespace=ns, timeout_s=180)
    ready_after = time.monotonic() - started

    table = cluster.kubectl("-n", ns, "get", "aas").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:2] == ["NAME", "READY"] and row[:2] == ["a-to-b", "True"], table

    worker = pods.one_ready_pod(cluster, ns, worker_selector("a-to-b"))
    assert worker["spec"]["containers"][0]["image"] == cluster.project_image
    # The kubelet ran the probes: Ready is its verdict on the readiness probe.
    assert pods.ready(worker)

    runs_before = len(airflow3.dag_runs(dag_id))
    t0 = time.monotonic()
    created = {airflow2.create_event(uri, {"via": "pod"})["id"] for _ in range(3)}
    counts = await_delivery(airflow3, [uri], airflow2.pods_url, created, timeout_s=90)
    crossed_s = time.monotonic() - t0
    assert counts == dict.fromkeys(created, 1)
    airflow3.wait_for_runs(dag_id, runs_before + 1)
    note(
        "first-sync-on-pods",
        ready_after_s=round(ready_after, 1),
        three_events_s=round(crossed_s, 2),
    )

    def replayed() -> dict[str, Any] | None:
        sync = live.get(cluster, pods.AAS, "a-to-b", ns)
        targets = ((sync or {}).get("status") or {}).get("targets") or []
        return sync if targets and targets[0].get("eventsReplayed", 0) >= 3 else None

    live.wait_for(replayed, what="eventsReplayed >= 3 in status", timeout_s=60)


EVENTS = 2000


def test_worker_pod_deleted_then_killed_mid_stream_loses_and_duplicates_nothing(
    cluster: ClusterRig,
    operator_release: Release,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
) -> None:
    """A 2,000-event stream; the worker pod is deleted (the ReplicaSet makes another), then
    its container is SIGKILLed (the kubelet restarts it). Then `suspend: true` scales it to
    zero and the pod goes; on resume it continues from the checkpoint in status."""
    ns = restricted_namespace(cluster, "stream")
    uris = assets.take(4)
    for name, instance in (("src", airflow3), ("dst", airflow3b)):
        cluster.kubectl(
            "-n", ns, "create", "secret", "generic", name,
            f"--from-literal=username={instance.username}",
            f"--from-literal=password={instance.password}",
        )  # fmt: skip
    spec = {
        "source": {"url": airflow3.pods_url, "auth": {"password": {"secretName": "src"}}},
        "targets": [
            {"name": "t", "url": airflow3b.pods_url, "auth": {"password": {"secretName": "dst"}}}
        ],
        "assets": {"include": [{"glob": u} for u in uris]},
        "kafka": {"bootstrapServers": [kafka.pods_bootstrap], "topic": "pods-stream"},
        "pollInterval": "500ms",
        "startFrom": "latest",
    }
    sync = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": "stream", "namespace": ns},
        "spec": spec,
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sync))
    cluster.wait_for("--for=condition=Ready", "aas/stream", namespace=ns, timeout_s=180)
    selector = worker_selector("stream")
    first = pods.one_ready_pod(cluster, ns, selector)

    stream = EventStream(airflow3, uris, total=EVENTS, rate=30.0, label="pods").start()
    stream.wait_for(EVENTS // 4)
    t0 = time.monotonic()
    cluster.kubectl("-n", ns, "delete", "pod", first["metadata"]["name"], "--wait=false")
    second = live.wait_for(
        lambda: next(
            (
                p
                for p in pods.ready_pods(cluster, ns, selector)
                if p["metadata"]["uid"] != first["metadata"]["uid"]
            ),
            None,
        ),
        what="the ReplicaSet's replacement pod Ready",
        timeout_s=120,
    )
    replaced_s = time.monotonic() - t0

    stream.wait_for(EVENTS // 2)
    t0 = time.monotonic()
    pods.kill_container(cluster, second)
    restarted = live.wait_for(
        lambda: next(
            (
                p
                for p in pods.ready_pods(cluster, ns, selector)
                if p["metadata"]["uid"] == second["metadata"]["uid"] and pods.restart_count(p) >= 1
            ),
            None,
        ),
        what="the kubelet's restart of the killed container",
        timeout_s=120,
    )
    restarted_s = time.monotonic() - t0
    stream.join()

    verdict = await_verdict(airflow3, airflow3b, uris, airflow3.pods_url, timeout_s=300)
    assert verdict.ok, verdict.summary()

    # suspend: the Deployment goes to zero and the pod goes away.
    cluster.kubectl(
        "-n", ns, "patch", "aas", "stream", "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    live.wait_for(
        lambda: not pods.pods(cluster, ns, selector),
        what="no worker pod while suspended",
        timeout_s=120,
    )
    checkpoint = live.get_any(cluster, pods.AAS, "stream", "-n", ns)["status"]["source"][
        "checkpoint"
    ]
    more = {airflow3.create_event(uris[0], {"while": "suspended"})["id"] for _ in range(5)}
    cluster.kubectl(
        "-n", ns, "patch", "aas", "stream", "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    pods.one_ready_pod(cluster, ns, selector)
    counts = await_delivery(airflow3b, [uris[0]], airflow3.pods_url, more, timeout_s=120)
    assert all(counts[i] == 1 for i in more), counts

    final = Verdict.of(source_ids(airflow3, uris), delivery(airflow3b, uris, airflow3.pods_url))
    note(
        "pods-stream",
        events=final.expected,
        lost=len(final.lost),
        duplicated=len(final.duplicated),
        replacement_ready_s=round(replaced_s, 1),
        container_restart_ready_s=round(restarted_s, 1),
        restarts=pods.restart_count(restarted),
        checkpoint_before_suspend=checkpoint,
    )
    assert final.ok, final.summary()


def _health(cluster: ClusterRig, namespace: str, name: str) -> str:
    """What Argo CD's health check (deploy/gitops/argocd/health.lua) says of the live object."""
    obj = live.get(cluster, pods.AAS, name, namespace)
    assert obj is not None
    return run_health([obj])[0]["status"]


def _wait_ready_exit(cluster: ClusterRig, namespace: str, name: str, timeout_s: int) -> int:
    return cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", f"aas/{name}", f"--timeout={timeout_s}s",
        check=False, timeout_s=timeout_s + 30,
    ).returncode  # fmt: skip


def test_rotated_secret_rolls_the_worker_which_syncs_with_the_new_credentials(
    cluster: ClusterRig,
    operator_release: Release,
    airflow3: AirflowInstance,
    airflow2: AirflowInstance,
    assets: AssetPool,
) -> None:
    """The target's credentials change: a new Airflow user, the Secret updated, the old user
    deleted. The worker pod rolls (the operator hashes the Secrets' versions into the pod
    template, at the latest at its next resync) and events keep arriving, through the new
    user, since the old one no longer exists. Argo CD's health and `kubectl wait` follow."""
    ns = restricted_namespace(cluster, "rotate")
    (uri,) = assets.take(1)
    old, new = "aas-rotate-old", "aas-rotate-new"
    for user in (old, new):
        airflow2.airflow(
            "users", "create", "--username", user, "--password", f"{user}-pw", "--role", "Admin",
            "--firstname", "a", "--lastname", "b", "--email", f"{user}@example.org",
        )  # fmt: skip
    cluster.kubectl(
        "-n", ns, "create", "secret", "generic", "src",
        f"--from-literal=username={airflow3.username}",
        f"--from-literal=password={airflow3.password}",
    )  # fmt: skip
    cluster.kubectl(
        "-n", ns, "create", "secret", "generic", "dst",
        f"--from-literal=username={old}", f"--from-literal=password={old}-pw",
    )  # fmt: skip
    sync = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": "rotate", "namespace": ns},
        "spec": {
            "source": {"url": airflow3.pods_url, "auth": {"password": {"secretName": "src"}}},
            "targets": [
                {"name": "v2", "url": airflow2.pods_url, "auth": {"basic": {"secretName": "dst"}}}
            ],
            "assets": {"include": [{"glob": uri}]},
            "pollInterval": "500ms",
            "startFrom": "latest",
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sync))
    assert _wait_ready_exit(cluster, ns, "rotate", 180) == 0
    assert _health(cluster, ns, "rotate") == "Healthy"
    selector = worker_selector("rotate")
    before = pods.one_ready_pod(cluster, ns, selector)
    first = {airflow3.create_event(uri, {"creds": "old"})["id"] for _ in range(2)}
    assert await_delivery(airflow2, [uri], airflow3.pods_url, first) == dict.fromkeys(first, 1)

    t0 = time.monotonic()
    rotated = cluster.kubectl(
        "-n", ns, "create", "secret", "generic", "dst",
        f"--from-literal=username={new}", f"--from-literal=password={new}-pw",
        "--dry-run=client", "-o", "json",
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", "-n", ns, input=rotated)
    airflow2.airflow("users", "delete", "--username", old)
    after = live.wait_for(
        lambda: next(
            (
                p
                for p in pods.ready_pods(cluster, ns, selector)
                if p["metadata"]["uid"] != before["metadata"]["uid"]
            ),
            None,
        ),
        what="the worker rolled after the Secret changed",
        timeout_s=150,
        interval_s=1.0,
    )
    rolled_s = time.monotonic() - t0
    second = {airflow3.create_event(uri, {"creds": "new"})["id"] for _ in range(2)}
    counts = await_delivery(airflow2, [uri], airflow3.pods_url, first | second, timeout_s=120)
    assert counts == dict.fromkeys(first | second, 1)
    assert _wait_ready_exit(cluster, ns, "rotate", 60) == 0
    assert _health(cluster, ns, "rotate") == "Healthy"
    log = pods.logs(cluster, ns, after["metadata"]["name"])
    assert f"{new}-pw" not in log and f"{old}-pw" not in log
    note("secret-rotation-on-pods", worker_rolled_after_s=round(rolled_s, 1))


def test_suspend_is_seen_alike_by_pods_argo_health_and_kubectl_wait(
    cluster: ClusterRig,
    operator_release: Release,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
) -> None:
    """Running: a Ready pod, Healthy, `kubectl wait` returns. Suspended: no pod, Suspended,
    `kubectl wait` times out. Resumed: all three come back."""
    ns = restricted_namespace(cluster, "health")
    (uri,) = assets.take(1)
    for name, instance in (("src", airflow3), ("dst", airflow3b)):
        cluster.kubectl(
            "-n", ns, "create", "secret", "generic", name,
            f"--from-literal=username={instance.username}",
            f"--from-literal=password={instance.password}",
        )  # fmt: skip
    sync = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": "health", "namespace": ns},
        "spec": {
            "source": {"url": airflow3.pods_url, "auth": {"password": {"secretName": "src"}}},
            "targets": [
                {
                    "name": "t",
                    "url": airflow3b.pods_url,
                    "auth": {"password": {"secretName": "dst"}},
                }
            ],
            "assets": {"include": [{"glob": uri}]},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sync))
    selector = worker_selector("health")
    assert _wait_ready_exit(cluster, ns, "health", 180) == 0
    assert pods.ready_pods(cluster, ns, selector)
    assert _health(cluster, ns, "health") == "Healthy"

    cluster.kubectl(
        "-n", ns, "patch", "aas", "health", "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    live.wait_for(lambda: not pods.pods(cluster, ns, selector), what="no pod", timeout_s=120)
    live.wait_for(
        lambda: _health(cluster, ns, "health") == "Suspended",
        what="Argo CD: Suspended",
        timeout_s=60,
    )
    assert _wait_ready_exit(cluster, ns, "health", 5) != 0

    cluster.kubectl(
        "-n", ns, "patch", "aas", "health", "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    assert _wait_ready_exit(cluster, ns, "health", 180) == 0
    assert pods.ready_pods(cluster, ns, selector)
    assert _health(cluster, ns, "health") == "Healthy"


def test_two_operator_replicas_with_peering_survive_the_active_pod_being_killed(
    cluster: ClusterRig, operator_release: Release
) -> None:
    """`replicaCount=2, peering.enabled=true`: one pod acts. Its container is SIGKILLed (no
    goodbye to the peering): a sync created right then is reconciled within the peering
    lifetime (30 s) plus a start, by one operator only."""
    chart.helm(
        "upgrade", "aas", str(CHART), "-n", OPERATOR_NS, "--reuse-values",
        "--set", "replicaCount=2", "--set", "peering.enabled=true", "--wait", "--timeout=240s",
        kubeconfig=cluster.kubeconfig, timeout_s=300,
    )  # fmt: skip
    try:
        operators = live.wait_for(
            lambda: _peering_operators(cluster),
            what="two Ready operator pods with peering, and no other",
            timeout_s=180,
        )

        def active() -> dict[str, Any] | None:
            acting = []
            for p in operators:
                log = pods.logs(cluster, OPERATOR_NS, p["metadata"]["name"])
                # With peering, kopf starts paused and logs RESUMED when it finds no peer
                # above it; a replica that starts below the other never logs a pause. So a
                # replica acts when it resumed after its last pause.
                paused_at = max(log.rfind(text) for text in PAUSED)
                if log.rfind(RESUMED) > paused_at:
                    acting.append(p)
            assert len(acting) == 1, f"{len(acting)} acting: " + "; ".join(
                _peering_lines(cluster, p) for p in operators
            )
            return acting[0]

        leader = live.wait_for(active, what="exactly one active operator", timeout_s=90)
        (standby,) = [p for p in operators if p["metadata"]["uid"] != leader["metadata"]["uid"]]
        ns = "ha-pods"
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl(
            "-n", ns, "create", "secret", "generic", "creds",
            "--from-literal=username=u", "--from-literal=password=p",
        )  # fmt: skip
        t0 = time.monotonic()
        pods.kill_container(cluster, leader)
        sync = {
            "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
            "kind": "AirflowAssetSync",
            "metadata": {"name": "after-kill", "namespace": ns},
            "spec": {
                "source": {
                    "url": "http://a.invalid:8080",
                    "auth": {"basic": {"secretName": "creds"}},
                },
                "targets": [
                    {
                        "name": "b",
                        "url": "http://b.invalid:8080",
                        "auth": {"basic": {"secretName": "creds"}},
                    }
                ],
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(sync))
        live.wait_for(
            lambda: live.get(cluster, "deployment", "after-kill-worker", ns),
            what="an operator to reconcile the new sync after the leader was killed",
            timeout_s=90,
        )
        took_over_s = time.monotonic() - t0
        handled = [
            p["metadata"]["name"]
            for p in pods.pods(cluster, OPERATOR_NS, OPERATOR_SELECTOR)
            if f"{ns}/after-kill" in pods.logs(cluster, OPERATOR_NS, p["metadata"]["name"])
        ]
        assert len(handled) == 1, handled
        note(
            "operator-ha-on-pods",
            reconciled_after_kill_s=round(took_over_s, 1),
            by="standby" if handled == [standby["metadata"]["name"]] else "restarted leader",
        )
        assert took_over_s < 30 + 45
    finally:
        chart.helm(
            "upgrade", "aas", str(CHART), "-n", OPERATOR_NS, "--reuse-values",
            "--set", "replicaCount=1", "--set", "peering.enabled=false", "--wait", "--timeout=240s",
            kubeconfig=cluster.kubeconfig, timeout_s=300,
        )  # fmt: skip


def _peering_operators(cluster: ClusterRig) -> list[dict[str, Any]] | None:
    """Both operator pods of the upgraded release, once the rollout is over.

    `helm --wait` can return while the old ReplicaSet's pod (no peering: it never pauses)
    is still Ready: a pod list taken then held it, and no "one active" could ever be seen.
    """
    all_pods = pods.pods(cluster, OPERATOR_NS, OPERATOR_SELECTOR)
    peering = [
        p
        for p in all_pods
        if pods.ready(p)
        and any(a.startswith("--peering=") for a in p["spec"]["containers"][0].get("args", []))
    ]
    return peering if len(peering) == 2 and len(all_pods) == 2 else None


def _peering_lines(cluster: ClusterRig, pod: dict[str, Any]) -> str:
    name = pod["metadata"]["name"]
    log = pods.logs(cluster, OPERATOR_NS, name)
    lines = [ln for ln in log.splitlines() if "peering" in ln.lower() or "operations" in ln]
    return f"{name}: {lines[-3:]}"


PAUSED = ("Pausing operations in favour of", "Pausing all operators, including self")
RESUMED = "Resuming operations after the pause"
