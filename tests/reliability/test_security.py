"""Secrets, RBAC and pod security, against the real API server, Kafka and Airflow.

- A full sync run on the cluster path (CR -> operator -> worker pod -> Kafka -> Airflow), with
  distinctive credentials (and a target whose password is wrong, so the error paths speak
  too), then every log line, every field of the CR and its children, every Kubernetes Event,
  every Kafka message and the worker's metrics are scanned for them: zero hits.
- A `kubectl auth can-i` matrix for the operator's identity (exactly `rbac.operator_rules()`,
  cluster-wide and namespace-scoped) and the worker's ServiceAccount (the builders' Role):
  what each may do and, as much, what each may not.
- The operator's pod as the Helm chart renders it is admitted by PodSecurity admission with
  the `restricted` level enforced on its namespace (and a root variant is refused).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from airflow_asset_sync.resources import naming, rbac
from rig import gobuild
from rig.airflow import USERNAME, AirflowInstance, AssetPool
from rig.cache import ROOT
from rig.kafka import KafkaBroker
from rig.kube import KubeRig
from rig.sync import sync_manifests
from support import live
from support.stream import await_verdict, note
from support.sync_cluster import SYNC_KIND, SyncCluster

pytestmark = [pytest.mark.rig, pytest.mark.slow]

#: A JSON Web Token anywhere (header.payload.): the 3.x login answer, or a leaked bearer.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")


@pytest.fixture
def crd(kube: KubeRig) -> KubeRig:
    kube.kubectl("apply", "--server-side", "-f", str(live.SYNC_CRD))
    live.wait_established(kube, "airflowassetsyncs.airflow-asset-sync.github.io")
    live.install_operator_rbac(kube)
    return kube


# -- secrets ------------------------------------------------------------------------------------


def _needles(*passwords: str) -> dict[str, str]:
    """Every form in which a credential could leak: plain, as a Basic header value, and as
    the base64 a Secret's `data` holds it in."""
    needles: dict[str, str] = {}
    for pw in passwords:
        needles[f"password {pw[:6]}..."] = pw
        needles[f"basic {pw[:6]}..."] = base64.b64encode(f"{USERNAME}:{pw}".encode()).decode()
        needles[f"secret data {pw[:6]}..."] = base64.b64encode(pw.encode()).decode()
    return needles


def _kafka_messages(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of the topic (keys, values, headers) from its beginning to its end."""

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()  # metadata of every topic, ours included
            partitions = sorted(consumer.partitions_for_topic(topic) or {0})
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: list[bytes] = []
            deadline = time.monotonic() + 60

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in tps])

            while await behind():
                assert time.monotonic() < deadline, "reading the topic took over 60 s"
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        out.append(
                            (r.key or b"")
                            + b"\n"
                            + (r.value or b"")
                            + b"\n"
                            + b"".join(k.encode() + b"=" + v for k, v in r.headers)
                        )
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _scan(sources: dict[str, str], needles: dict[str, str]) -> list[str]:
    hits = []
    for where, text in sources.items():
        for label, needle in needles.items():
            if needle in text:
                line = next(ln for ln in text.splitlines() if needle in ln)
                hits.append(f"{label} in {where}: {line[:200]}")
        for match in JWT.finditer(text):
            hits.append(f"a JWT in {where}: {match.group(0)[:40]}...")
    return hits


def test_no_secret_reaches_logs_status_events_or_kafka(
    crd: KubeRig,
    airflow2: AirflowInstance,
    airflow3: AirflowInstance,
    airflow3b: AirflowInstance,
    assets: AssetPool,
    kafka: KafkaBroker,
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    """2.11 (basic auth) -> 3.3 (password login, JWT) and -> a second 3.3 whose password is
    wrong (distinctive too), so login refusals, retries and `lastError` are in the scan."""
    started = time.monotonic()
    kube = crd
    uris = assets.take(2)
    wrong = f"wrong-Pw-{secrets.token_hex(6)}"
    docs = sync_manifests(
        "secrets",
        airflow2,
        [("good", airflow3), ("bad", airflow3b)],
        include=uris,
        kafka=kafka.bootstrap,
        topic=kafka_topic,
    )
    (bad_secret,) = [d for d in docs if d["metadata"]["name"] == "secrets-bad"]
    bad_secret["stringData"]["password"] = wrong
    cluster = SyncCluster(kube, namespace="rel-secrets", manifests=docs, workdir=tmp_path)
    try:
        cluster.start()
        with airflow2.client() as client:
            for i in range(30):
                airflow2.create_event(uris[i % 2], {"i": i}, client)
        verdict = await_verdict(airflow2, airflow3, uris, airflow2.url, timeout_s=180)
        assert verdict.ok, verdict.summary()

        def bad_target_reported() -> bool:
            targets = {t["name"]: t for t in cluster.status().get("targets") or []}
            return bool((targets.get("bad") or {}).get("lastError"))

        # Status is flushed every 10 s: the bad target's login refusal shows there too.
        live.wait_for(bad_target_reported, what="the bad target's error in status", timeout_s=90)
        metrics = httpx.get(f"http://127.0.0.1:{cluster.pod.port}/metrics", timeout=10).text
        cluster.pod.stop()

        ns = cluster.namespace
        sources: dict[str, str] = {
            "worker log": cluster.pod.log(),
            "operator log": cluster.operator.log_path.read_text(errors="replace"),
            "worker metrics": metrics,
            "the AirflowAssetSync": json.dumps(cluster.sync()),
            "core Events": kube.kubectl("get", "events", "-n", ns, "-o", "json").stdout,
            "events.k8s.io Events": kube.kubectl(
                "get", "events.events.k8s.io", "-n", ns, "-o", "json"
            ).stdout,
        }
        for kind in ("deployment", "serviceaccount", "role", "rolebinding"):
            sources[kind] = kube.kubectl(
                "get", kind, naming.worker_name(cluster.name), "-n", ns, "-o", "json"
            ).stdout
        messages = _kafka_messages(kafka.bootstrap, kafka_topic)
        sources["Kafka messages"] = b"\n".join(messages).decode(errors="replace")
    finally:
        cluster.stop()

    status = cluster.status()
    bad = {t["name"]: t for t in status["targets"]}["bad"]
    needles = _needles(airflow2.password, airflow3.password, wrong)
    hits = _scan(sources, needles)
    events = json.loads(sources["core Events"])["items"]
    note(
        "secrets-scan",
        log_lines=sum(sources[k].count("\n") for k in ("worker log", "operator log")),
        kafka_messages=len(messages),
        k8s_events=len(events),
        bad_target_error=bad["lastError"][:120],
        hits=len(hits),
        runtime_s=round(time.monotonic() - started, 1),
    )
    # The scan looked at something real: the error paths ran, the topic holds the events.
    assert "login refused" in cluster.pod.log() or "login refused" in bad["lastError"]
    assert len(messages) >= 30
    assert events, "no Kubernetes Event to scan"
    assert not hits, "\n".join(hits)


# -- can-i ----------------------------------------------------------------------------------


def _can(
    kube: KubeRig, user: str, verb: str, resource: str, namespace: str | None, *extra: str
) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}", *extra]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kube.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {result.stderr}"
    return answer == "yes"


def _matrix(
    kube: KubeRig, user: str, rows: list[tuple[bool, str, str, str | None, tuple[str, ...]]]
) -> list[str]:
    wrong = []
    for expected, verb, resource, ns, extra in rows:
        if _can(kube, user, verb, resource, ns, *extra) != expected:
            wrong.append(
                f"{'should' if expected else 'should NOT'} {verb} {resource} "
                f"{' '.join(extra)} in {ns or 'the cluster'}"
            )
    return wrong


SYNCS = SYNC_KIND
SYNC_STATUS = ("--subresource=status",)


def test_can_i_matrix_for_the_operator_and_the_worker(crd: KubeRig) -> None:
    kube = crd
    # kopf's peering CRDs too: `can-i` on a resource type the server does not know says no.
    kube.kubectl("apply", "--server-side", "-f", str(live.PEERING_CRDS))
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        live.wait_established(kube, name)
    ns, other = live.create_namespace(kube, "rel-rbac"), live.create_namespace(kube, "rel-rbac-x")
    yes, no = True, False
    none: tuple[str, ...] = ()

    # The operator, cluster-wide: exactly rbac.operator_rules() through a ClusterRoleBinding.
    cluster_op = "system:serviceaccount:aas-system:rel-rbac-operator"
    live.operator_identity(kube, name="rel-rbac-operator")
    operator_rows: list[tuple[bool, str, str, str | None, tuple[str, ...]]] = [
        (yes, "get", SYNCS, ns, none),
        (yes, "list", SYNCS, None, none),
        (yes, "watch", SYNCS, None, none),
        (yes, "patch", SYNCS, ns, none),
        (yes, "patch", SYNCS, ns, SYNC_STATUS),
        (yes, "get", SYNCS, ns, SYNC_STATUS),
        (yes, "update", SYNCS, ns, ("--subresource=finalizers",)),
        (no, "create", SYNCS, ns, none),
        (no, "update", SYNCS, ns, none),
        (no, "delete", SYNCS, ns, none),
        (no, "deletecollection", SYNCS, ns, none),
        (no, "update", SYNCS, ns, SYNC_STATUS),
    ]
    for resource in (
        "serviceaccounts",
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
        "deployments.apps",
    ):
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            operator_rows.append((yes, verb, resource, ns, none))
        operator_rows += [
            (no, "update", resource, ns, none),
            (no, "deletecollection", resource, ns, none),
        ]
    operator_rows += [
        (yes, "get", "secrets", ns, none),
        (no, "list", "secrets", ns, none),
        (no, "watch", "secrets", ns, none),
        (no, "create", "secrets", ns, none),
        (no, "update", "secrets", ns, none),
        (no, "patch", "secrets", ns, none),
        (no, "delete", "secrets", ns, none),
        (yes, "create", "events", ns, none),
        (yes, "create", "events.events.k8s.io", ns, none),
        (no, "delete", "events", ns, none),
        (yes, "get", "kopfpeerings.kopf.dev", ns, none),
        (yes, "patch", "clusterkopfpeerings.kopf.dev", None, none),
        (no, "create", "clusterkopfpeerings.kopf.dev", None, none),
        (yes, "list", "customresourcedefinitions.apiextensions.k8s.io", None, none),
        (no, "create", "customresourcedefinitions.apiextensions.k8s.io", None, none),
        (no, "patch", "customresourcedefinitions.apiextensions.k8s.io", None, none),
        (no, "delete", "customresourcedefinitions.apiextensions.k8s.io", None, none),
        (yes, "watch", "namespaces", None, none),
        (no, "create", "namespaces", None, none),
        (no, "delete", "namespaces", None, none),
        (no, "create", "pods", ns, none),
        (no, "get", "pods", ns, none),
        (no, "create", "pods", ns, ("--subresource=exec",)),
        (no, "create", "serviceaccounts", ns, ("--subresource=token",)),
        (no, "get", "configmaps", ns, none),
        (no, "create", "jobs.batch", ns, none),
        (no, "patch", "deployments.apps", ns, ("--subresource=scale",)),
        (no, "escalate", "roles.rbac.authorization.k8s.io", ns, none),
        (no, "bind", "roles.rbac.authorization.k8s.io", ns, none),
        (no, "bind", "clusterroles.rbac.authorization.k8s.io", None, none),
        (no, "create", "clusterroles.rbac.authorization.k8s.io", None, none),
        (no, "create", "clusterrolebindings.rbac.authorization.k8s.io", None, none),
        (no, "get", "nodes", None, none),
        (no, "impersonate", "users", None, none),
        (no, "impersonate", "serviceaccounts", ns, none),
        (no, "create", "certificatesigningrequests.certificates.k8s.io", None, none),
    ]
    wrong = _matrix(kube, cluster_op, operator_rows)

    # The operator, namespace-scoped: the same rules, in its namespaces only.
    scoped_op = "system:serviceaccount:aas-system:rel-rbac-scoped"
    live.operator_identity(kube, name="rel-rbac-scoped", namespaces=[ns])
    scoped_rows: list[tuple[bool, str, str, str | None, tuple[str, ...]]] = [
        (yes, "create", "deployments.apps", ns, none),
        (yes, "get", "secrets", ns, none),
        (yes, "patch", SYNCS, ns, SYNC_STATUS),
        (no, "create", "deployments.apps", other, none),
        (no, "get", "secrets", other, none),
        (no, "list", SYNCS, other, none),
        (no, "list", SYNCS, None, none),
        (no, "create", "events", other, none),
    ]
    wrong += _matrix(kube, scoped_op, scoped_rows)

    # The worker: its ServiceAccount, Role and RoleBinding exactly as the operator builds them.
    owner = naming.Owner(name="orders", namespace=ns, uid="00000000-0000-0000-0000-000000000001")
    objs = [rbac.service_account(owner), rbac.role(owner), rbac.role_binding(owner)]
    for obj in objs:
        obj["metadata"].pop("ownerReferences", None)  # no such owner object here
    live.apply(kube, *objs)
    worker = f"system:serviceaccount:{ns}:{naming.worker_name('orders')}"
    own, sibling = f"{SYNCS}/orders", f"{SYNCS}/other"
    worker_rows: list[tuple[bool, str, str, str | None, tuple[str, ...]]] = [
        (yes, "get", own, ns, none),
        (yes, "watch", own, ns, none),
        (yes, "patch", own, ns, SYNC_STATUS),
        (no, "patch", own, ns, none),
        (no, "update", own, ns, none),
        (no, "delete", own, ns, none),
        (no, "update", own, ns, SYNC_STATUS),
        (no, "get", own, other, none),
        (no, "list", SYNCS, ns, none),
        (no, "create", SYNCS, ns, none),
        (no, "get", sibling, ns, none),
        (no, "patch", sibling, ns, SYNC_STATUS),
        (no, "get", "secrets", ns, none),
        (no, "list", "secrets", ns, none),
        (no, "get", "configmaps", ns, none),
        (no, "create", "events", ns, none),
        (no, "get", "pods", ns, none),
        (no, "create", "pods", ns, none),
        (no, "get", "deployments.apps", ns, none),
        (no, "patch", f"deployments.apps/{naming.worker_name('orders')}", ns, none),
        (no, "get", "serviceaccounts", ns, none),
        (no, "create", "serviceaccounts", ns, ("--subresource=token",)),
        (no, "list", "namespaces", None, none),
        (no, "get", "kopfpeerings.kopf.dev", ns, none),
    ]
    wrong += _matrix(kube, worker, worker_rows)

    checked = len(operator_rows) + len(scoped_rows) + len(worker_rows)
    allowed = sum(r[0] for r in operator_rows + scoped_rows + worker_rows)
    note(
        "can-i-matrix",
        checks=checked,
        allowed=allowed,
        denied=checked - allowed,
        mismatches=len(wrong),
    )
    assert not wrong, "\n".join(wrong)


# -- pod security -------------------------------------------------------------------------------


def test_operator_pod_from_the_chart_is_admitted_under_restricted(crd: KubeRig) -> None:
    """Rendered with `helm template`, the Deployment applied (for real) in a namespace that
    enforces `restricted`, and its pod template created as a Pod (dry run on the server, so
    PodSecurity admission, which judges pods, runs in full)."""
    kube = crd
    chart = ROOT / "charts" / "airflow-asset-sync"
    if not (chart / "Chart.yaml").exists():
        pytest.fail("charts/airflow-asset-sync is missing: cannot render the operator pod")
    ns = "rel-restricted"
    labels = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}
    live.apply(
        kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
    )
    rendered = subprocess.run(
        [
            str(gobuild.helm_bin()),
            "template",
            "rel",
            str(chart),
            "--namespace",
            ns,
            "--kube-version",
            gobuild.K8S_VERSION,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    (deploy,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]

    applied = kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(deploy), check=False)
    assert applied.returncode == 0, applied.stderr
    assert "PodSecurity" not in applied.stderr and "Warning" not in applied.stderr, applied.stderr
    stored = live.get(kube, "deployment", deploy["metadata"]["name"], ns)
    assert stored is not None

    template = stored["spec"]["template"]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-probe", "namespace": ns, **template["metadata"]},
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    admitted = kube.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert admitted.returncode == 0, admitted.stderr
    assert "PodSecurity" not in admitted.stderr, admitted.stderr
    security = template["spec"]["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]

    # The admission is live: the same pod with privilege escalation allowed is refused.
    bad = json.loads(json.dumps(pod))
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    refused = kube.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr
    note(
        "pod-security-restricted",
        namespace=ns,
        deployment=deploy["metadata"]["name"],
        admitted=True,
        privileged_variant_refused=True,
    )
