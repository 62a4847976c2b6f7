"""Kubernetes API access: the only module that imports the `kubernetes` client.

Why a wrapper: the rest of the code deals in plain dicts (what the builders produce and what
the tests compare), sees one small error tree instead of `ApiException` and urllib3 errors,
and can be handed a fake (`KubeApi` is a Protocol) in unit tests.

Why server-side apply for children: one call creates or converges an object, and fields the
operator stops setting (a removed nodeSelector) are removed, which a merge patch would leave
behind. Fields other managers add (an injected sidecar) are left alone.

The client is synchronous; the operator calls it from kopf's sync handlers, which kopf runs in
a thread pool, so the event loop is never blocked.

Errors::

    KubeError              any failure talking to the API (status None: no HTTP answer)
      .retriable           True for timeouts, 429, 5xx and no answer; False for 4xx

Sections: errors and types; the `KubeApi` protocol; `KubeClient` (children, Secrets, the
AirflowAssetSync object, the worker's Lease). Worker-side status helpers belong in the last
sections.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from airflow_asset_sync.api.spec import GROUP, KIND, PLURAL, VERSION

Manifest = dict[str, Any]

#: Field manager name for server-side apply and status patches by the operator.
OPERATOR_FIELD_MANAGER = "airflow-asset-sync-operator"
#: (connect, read) timeouts in seconds for every request: a hung API server must not hang a
#: handler thread forever.
REQUEST_TIMEOUT_SECONDS = (5.0, 30.0)
_RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


# --- errors and types --------------------------------------------------------------------


class KubeError(Exception):
    """A Kubernetes API call failed. The original exception is chained as `__cause__`."""

    def __init__(self, message: str, *, status: int | None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def retriable(self) -> bool:
        """Worth retrying unchanged: no answer, throttled, or a server-side failure."""
        return self.status is None or self.status in _RETRIABLE_STATUSES


class ChildKind(StrEnum):
    """The kinds of object the operator creates for each AirflowAssetSync."""

    SERVICE_ACCOUNT = "ServiceAccount"
    ROLE = "Role"
    ROLE_BINDING = "RoleBinding"
    DEPLOYMENT = "Deployment"
    #: Only with `spec.source.push` (the poke endpoint); deleted when `push` goes.
    SERVICE = "Service"


@dataclass(frozen=True, kw_only=True)
class SecretInfo:
    """What the operator needs to know about a Secret: its keys and version, never values."""

    name: str
    resource_version: str
    keys: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class Applied:
    """A server-side apply's answer: the object, and whether the apply created it (201)."""

    body: Manifest
    created: bool


# --- protocol ------------------------------------------------------------------------------


class KubeApi(Protocol):
    """The operator's API calls; `KubeClient` implements it, unit tests fake it."""

    def get(self, kind: ChildKind, *, namespace: str, name: str) -> Manifest | None:
        """The object, or None if it does not exist."""
        ...

    def apply(self, body: Manifest) -> Applied:
        """Server-side apply `body` (kind, namespace and name taken from it), forced.

        An object controlled by someone else is refused by the API server (422: two
        controller references), so an apply never takes one over."""
        ...

    def delete(self, kind: ChildKind, *, namespace: str, name: str) -> bool:
        """Delete the object; False if it was already gone."""
        ...

    def read_secret(self, *, namespace: str, name: str) -> SecretInfo | None:
        """Keys and version of a Secret, or None if it does not exist."""
        ...

    def get_sync(self, *, namespace: str, name: str) -> Manifest | None:
        """The AirflowAssetSync, or None if it does not exist."""
        ...

    def list_syncs(
        self, *, namespace: str, limit: int = 100, continue_token: str | None = None
    ) -> tuple[list[Manifest], str | None]:
        """One page of the AirflowAssetSyncs in `namespace`, and the token of the next page
        (None after the last)."""
        ...

    def patch_sync_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> Manifest:
        """Merge-patch the given status keys only (other writers' keys are left alone).

        With `resource_version`, only if the object is still at that version: a KubeError
        with status 409 otherwise (a write computed from a cached copy never overwrites a
        newer one)."""
        ...


# --- the real client -----------------------------------------------------------------------

#: Where each kind of object lives in the REST API: (prefix, plural). Namespaced paths are
#: `{prefix}/namespaces/{namespace}/{plural}/{name}`.
_PATHS: dict[str, tuple[str, str]] = {
    ChildKind.SERVICE_ACCOUNT: ("/api/v1", "serviceaccounts"),
    ChildKind.ROLE: ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ChildKind.ROLE_BINDING: ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ChildKind.DEPLOYMENT: ("/apis/apps/v1", "deployments"),
    ChildKind.SERVICE: ("/api/v1", "services"),
    "Secret": ("/api/v1", "secrets"),
    KIND: (f"/apis/{GROUP}/{VERSION}", PLURAL),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    "KopfPeering": ("/apis/kopf.dev/v1", "kopfpeerings"),
    "ClusterKopfPeering": ("/apis/kopf.dev/v1", "clusterkopfpeerings"),
}


def _path(kind: str, *, namespace: str | None, name: str | None = None) -> str:
    prefix, plural = _PATHS[kind]
    path = f"{prefix}/namespaces/{quote(namespace, safe='')}" if namespace else prefix
    path = f"{path}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name is not None else path


def _error(exc: Exception, *, action: str) -> KubeError:
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        with contextlib.suppress(TypeError, ValueError, KeyError):
            message = json.loads(exc.body or "")["message"]  # the API's Status object
        return KubeError(f"{action}: {message}", status=exc.status, reason=exc.reason or "")
    return KubeError(f"{action}: {exc}", status=None)


class KubeClient:
    """`KubeApi` over the official `kubernetes` client's `ApiClient`, returning plain dicts.

    Requests go straight to REST paths (`_PATHS`) through `ApiClient`, which still brings
    the kubeconfig or in-cluster credentials, TLS and the connection pool. Not through the
    typed API classes: `CoreV1Api`'s module alone took 95 MiB and 8 s to import (measured
    with kubernetes 37: 43 -> 139 MiB of RSS), the larger part of the operator's memory at
    any number of syncs, and every body here is a plain dict anyway.
    """

    def __init__(self, api_client: Any, *, field_manager: str = OPERATOR_FIELD_MANAGER) -> None:
        self._field_manager = field_manager
        self._api_client = api_client

    @classmethod
    def from_environment(cls, *, field_manager: str = OPERATOR_FIELD_MANAGER) -> KubeClient:
        """In-cluster credentials if present, else the kubeconfig (`KUBECONFIG`)."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(k8s.ApiClient(configuration), field_manager=field_manager)

    def _request(self, action: str, method: str, path: str, **options: Any) -> Manifest:
        """One request (`_exchange`'s options); the response's JSON body, or KubeError for
        no answer or non-2xx."""
        return self._exchange(action, method, path, **options)[1]

    def _exchange(
        self,
        action: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str | None = None,
    ) -> tuple[int, Manifest]:
        """One request: the response's HTTP status and JSON body, or KubeError for no answer
        or non-2xx."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            request = self._api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api_client.call_api(*request, _request_timeout=REQUEST_TIMEOUT_SECONDS)
            data = response.read()
            if not 200 <= response.status <= 299:
                raise ApiException(http_resp=response)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _error(exc, action=action) from exc
        result: Manifest = json.loads(data) if data else {}
        return int(response.status), result

    def _get(self, action: str, path: str) -> Manifest | None:
        """GET, or None on 404."""
        try:
            return self._request(action, "GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    # children

    def get(self, kind: ChildKind, *, namespace: str, name: str) -> Manifest | None:
        return self._get(
            f"get {kind} {namespace}/{name}", _path(kind, namespace=namespace, name=name)
        )

    def apply(self, body: Manifest) -> Applied:
        kind = ChildKind(body["kind"])
        meta = body["metadata"]
        status, answer = self._exchange(
            f"apply {kind} {meta['namespace']}/{meta['name']}",
            "PATCH",
            _path(kind, namespace=meta["namespace"], name=meta["name"]),
            body=body,
            query=[("fieldManager", self._field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return Applied(body=answer, created=status == 201)

    def delete(self, kind: ChildKind, *, namespace: str, name: str) -> bool:
        try:
            self._request(
                f"delete {kind} {namespace}/{name}",
                "DELETE",
                _path(kind, namespace=namespace, name=name),
                # Background: the Deployment goes now, its ReplicaSets and pods follow via
                # the garbage collector. Foreground would hang forever without one.
                query=[("propagationPolicy", "Background")],
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # Secrets

    def _secret_body(self, *, namespace: str, name: str) -> Manifest | None:
        return self._get(
            f"get Secret {namespace}/{name}", _path("Secret", namespace=namespace, name=name)
        )

    def read_secret(self, *, namespace: str, name: str) -> SecretInfo | None:
        body = self._secret_body(namespace=namespace, name=name)
        if body is None:
            return None
        # Only key names leave this function: values are dropped right here.
        return SecretInfo(
            name=name,
            resource_version=str(body.get("metadata", {}).get("resourceVersion", "")),
            keys=frozenset((body.get("data") or {}).keys()),
        )

    def read_secret_data(self, *, namespace: str, name: str) -> Manifest | None:
        """A Secret with its values (base64 `data`), as `verify` run by a user needs them to
        log in to the instances; the operator never calls this (it reads key names only)."""
        body = self._secret_body(namespace=namespace, name=name)
        if body is None:
            return None
        return {"metadata": {"name": name}, "data": dict(body.get("data") or {})}

    # the AirflowAssetSync object

    def get_sync(self, *, namespace: str, name: str) -> Manifest | None:
        return self._get(
            f"get {KIND} {namespace}/{name}", _path(KIND, namespace=namespace, name=name)
        )

    def list_syncs(
        self, *, namespace: str, limit: int = 100, continue_token: str | None = None
    ) -> tuple[list[Manifest], str | None]:
        query = [("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        listed = self._request(
            f"list {PLURAL} in {namespace}",
            "GET",
            _path(KIND, namespace=namespace),
            query=query,
        )
        items: list[Manifest] = listed.get("items") or []
        token = (listed.get("metadata") or {}).get("continue")
        return items, str(token) if token else None

    def get_peering(self, *, namespace: str | None, name: str) -> Manifest | None:
        """kopf's peering object: a KopfPeering in `namespace`, or the ClusterKopfPeering."""
        if namespace is None:
            return self._get(
                f"get ClusterKopfPeering {name}",
                _path("ClusterKopfPeering", namespace=None, name=name),
            )
        return self._get(
            f"get KopfPeering {namespace}/{name}",
            _path("KopfPeering", namespace=namespace, name=name),
        )

    def patch_sync_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> Manifest:
        patch: Manifest = {"status": dict(status)}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        return self._request(
            f"patch {KIND} {namespace}/{name} status",
            "PATCH",
            _path(KIND, namespace=namespace, name=name) + "/status",
            body=patch,
            query=[("fieldManager", self._field_manager)],
            content_type="application/merge-patch+json",
        )

    # the worker's Lease (coordination.k8s.io/v1): one writer per sync, see worker/lease.py

    def get_lease(self, *, namespace: str, name: str) -> Manifest | None:
        """The Lease, or None if it does not exist."""
        return self._get(
            f"get Lease {namespace}/{name}", _path("Lease", namespace=namespace, name=name)
        )

    def create_lease(self, body: Manifest) -> Manifest:
        """Create the Lease; a KubeError with status 409 if it already exists."""
        meta = body["metadata"]
        return self._request(
            f"create Lease {meta['namespace']}/{meta['name']}",
            "POST",
            _path("Lease", namespace=meta["namespace"]),
            body=body,
            query=[("fieldManager", self._field_manager)],
        )

    def replace_lease(self, body: Manifest) -> Manifest:
        """Replace (PUT) the Lease. `metadata.resourceVersion` makes it conditional: a
        KubeError with status 409 when someone else wrote it since that version."""
        meta = body["metadata"]
        return self._request(
            f"update Lease {meta['namespace']}/{meta['name']}",
            "PUT",
            _path("Lease", namespace=meta["namespace"], name=meta["name"]),
            body=body,
            query=[("fieldManager", self._field_manager)],
        )
