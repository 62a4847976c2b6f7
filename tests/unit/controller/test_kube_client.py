"""`clients.kube.KubeClient` against a loopback HTTP stand-in for the API server.

Checks what goes over the wire (verb, path, query, content type, body) and how answers map
back (dicts, None/False for 404, `KubeError.retriable`), with no cluster. The real API
server comes with the test rig.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client as k8s

from airflow_asset_sync.clients import kube
from rig.cache import ROOT


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any


@dataclass
class Server:
    requests: list[Request] = field(default_factory=list)
    #: (method, path) -> (status, body); anything else answers 404.
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            state.requests.append(
                Request(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query),
                    content_type=self.headers.get("Content-Type", ""),
                    body=json.loads(raw) if raw else None,
                )
            )
            status, body = state.answers.get(
                (self.command, url.path),
                (404, {"kind": "Status", "message": f"{url.path} not found", "reason": "NotFound"}),
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Server, kube.KubeClient]]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    configuration = k8s.Configuration()
    configuration.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    api_client = k8s.ApiClient(configuration)
    try:
        yield state, kube.KubeClient(api_client)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        api_client.close()  # type: ignore[no-untyped-call]


DEPLOY_PATH = "/apis/apps/v1/namespaces/data/deployments/orders-worker"


def test_apply_is_a_forced_server_side_apply(server: tuple[Server, kube.KubeClient]) -> None:
    state, client = server
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "orders-worker", "namespace": "data"},
        "spec": {"replicas": 1},
    }
    state.answers[("PATCH", DEPLOY_PATH)] = (200, {**body, "status": {}})
    assert client.apply(body) == kube.Applied(body={**body, "status": {}}, created=False)
    state.answers[("PATCH", DEPLOY_PATH)] = (201, body)
    assert client.apply(body).created  # 201: this apply created it
    request = state.requests[0]
    assert request.method == "PATCH"
    assert request.content_type == "application/apply-patch+yaml"
    assert request.query == {"fieldManager": ["airflow-asset-sync-operator"], "force": ["true"]}
    assert request.body == body


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        (kube.ChildKind.SERVICE_ACCOUNT, "/api/v1/namespaces/data/serviceaccounts/w"),
        (kube.ChildKind.ROLE, "/apis/rbac.authorization.k8s.io/v1/namespaces/data/roles/w"),
        (
            kube.ChildKind.ROLE_BINDING,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/data/rolebindings/w",
        ),
        (kube.ChildKind.DEPLOYMENT, "/apis/apps/v1/namespaces/data/deployments/w"),
    ],
)
def test_get_and_delete_each_child_kind(
    server: tuple[Server, kube.KubeClient], kind: kube.ChildKind, path: str
) -> None:
    state, client = server
    assert client.get(kind, namespace="data", name="w") is None
    assert client.delete(kind, namespace="data", name="w") is False
    state.answers[("GET", path)] = (200, {"metadata": {"name": "w"}})
    state.answers[("DELETE", path)] = (200, {"kind": "Status"})
    assert client.get(kind, namespace="data", name="w") == {"metadata": {"name": "w"}}
    assert client.delete(kind, namespace="data", name="w") is True
    assert [r.path for r in state.requests] == [path] * 4
    assert state.requests[-1].query == {"propagationPolicy": ["Background"]}


def test_list_syncs_reads_one_page_and_returns_the_next_token(
    server: tuple[Server, kube.KubeClient],
) -> None:
    state, client = server
    path = "/apis/airflow-asset-sync.github.io/v1alpha1/namespaces/data/airflowassetsyncs"
    state.answers[("GET", path)] = (
        200,
        {"items": [{"metadata": {"name": "a"}}], "metadata": {"continue": "next-page"}},
    )
    items, token = client.list_syncs(namespace="data", limit=50)
    assert (items, token) == ([{"metadata": {"name": "a"}}], "next-page")
    state.answers[("GET", path)] = (200, {"items": [], "metadata": {}})
    assert client.list_syncs(namespace="data", continue_token="next-page") == ([], None)
    assert [r.query for r in state.requests] == [
        {"limit": ["50"]},
        {"limit": ["100"], "continue": ["next-page"]},
    ]


def test_read_secret_returns_keys_and_version_only(server: tuple[Server, kube.KubeClient]) -> None:
    state, client = server
    state.answers[("GET", "/api/v1/namespaces/data/secrets/creds")] = (
        200,
        {"metadata": {"resourceVersion": "42"}, "data": {"username": "dQ==", "password": "cA=="}},
    )
    info = client.read_secret(namespace="data", name="creds")
    assert info == kube.SecretInfo(
        name="creds", resource_version="42", keys=frozenset({"username", "password"})
    )
    assert "cA==" not in repr(info)
    assert client.read_secret(namespace="data", name="missing") is None


def test_sync_get_and_status_merge_patch(server: tuple[Server, kube.KubeClient]) -> None:
    state, client = server
    path = "/apis/airflow-asset-sync.github.io/v1alpha1/namespaces/data/airflowassetsyncs/orders"
    state.answers[("GET", path)] = (200, {"metadata": {"name": "orders"}})
    state.answers[("PATCH", path + "/status")] = (200, {"status": {"observedGeneration": 2}})
    assert client.get_sync(namespace="data", name="orders") == {"metadata": {"name": "orders"}}
    client.patch_sync_status(namespace="data", name="orders", status={"observedGeneration": 2})
    patch = state.requests[-1]
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"status": {"observedGeneration": 2}}
    assert client.get_sync(namespace="data", name="gone") is None


@pytest.mark.parametrize(
    ("status", "retriable"), [(403, False), (422, False), (429, True), (503, True)]
)
def test_errors_carry_status_message_and_retriability(
    server: tuple[Server, kube.KubeClient], status: int, retriable: bool
) -> None:
    state, client = server
    state.answers[("GET", DEPLOY_PATH)] = (status, {"kind": "Status", "message": "nope: details"})
    with pytest.raises(kube.KubeError) as raised:
        client.get(kube.ChildKind.DEPLOYMENT, namespace="data", name="orders-worker")
    assert raised.value.status == status
    assert raised.value.retriable is retriable
    assert "nope: details" in str(raised.value)
    assert "Deployment data/orders-worker" in str(raised.value)


def test_no_answer_is_retriable() -> None:
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = 0
    client = kube.KubeClient(k8s.ApiClient(configuration))
    with pytest.raises(kube.KubeError) as raised:
        client.get(kube.ChildKind.ROLE, namespace="data", name="x")
    assert raised.value.status is None
    assert raised.value.retriable


# -- no typed API module is ever imported ------------------------------------------------------

_PROBE = """
import json, sys
import kubernetes.client as k8s
from airflow_asset_sync.clients.kube import ChildKind, KubeClient, KubeError
configuration = k8s.Configuration()
configuration.host = "https://127.0.0.1:1"
client = KubeClient(k8s.ApiClient(configuration))
calls = [
    lambda: client.get(ChildKind.SERVICE_ACCOUNT, namespace="n", name="x"),
    lambda: client.apply({"kind": "Deployment", "metadata": {"namespace": "n", "name": "x"}}),
    lambda: client.read_secret(namespace="n", name="x"),
    lambda: client.get_sync(namespace="n", name="x"),
    lambda: client.list_syncs(namespace="n"),
    lambda: client.patch_sync_status(namespace="n", name="x", status={}),
    lambda: client.get_lease(namespace="n", name="x"),
]
failed = 0
for call in calls:
    try:
        call()
    except KubeError:
        failed += 1
loaded = sorted(m for m in sys.modules if m.startswith("kubernetes.client.api."))
print(json.dumps({"failed": failed, "loaded": loaded}))
"""


def test_the_client_never_imports_a_typed_api_module() -> None:
    # A fresh interpreter: another test importing CoreV1Api would hide the regression.
    # core_v1_api alone is 95 MiB of RSS and 8 s of import with kubernetes 37; the operator
    # carried it (and a worker pod did, before that) for a handful of REST paths.
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": ""},
    )
    probe = json.loads(result.stdout)
    assert probe["failed"] == 7  # every call went out (to a closed port) and failed cleanly
    assert probe["loaded"] == []
