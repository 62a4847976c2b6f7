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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from airflow_asset_sync.api import spec as api

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


# --- protocol ------------------------------------------------------------------------------


class KubeApi(Protocol):
    """The operator's API calls; `KubeClient` implements it, unit tests fake it."""

    def get(self, kind: ChildKind, *, namespace: str, name: str) -> Manifest | None:
        """The object, or None if it does not exist."""
        ...

    def apply(self, body: Manifest) -> Manifest:
        """Server-side apply `body` (kind, namespace and name taken from it), forced."""
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

    def patch_sync_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Manifest:
        """Merge-patch the given status keys only (other writers' keys are left alone)."""
        ...


# --- the real client -----------------------------------------------------------------------

_CHILD_APIS: dict[ChildKind, tuple[str, str]] = {
    ChildKind.SERVICE_ACCOUNT: ("core", "service_account"),
    ChildKind.ROLE: ("rbac", "role"),
    ChildKind.ROLE_BINDING: ("rbac", "role_binding"),
    ChildKind.DEPLOYMENT: ("apps", "deployment"),
    ChildKind.SERVICE: ("core", "service"),
}


def _error(exc: Exception, *, action: str) -> KubeError:
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        with contextlib.suppress(TypeError, ValueError, KeyError):
            message = json.loads(exc.body or "")["message"]  # the API's Status object
        return KubeError(f"{action}: {message}", status=exc.status, reason=exc.reason or "")
    return KubeError(f"{action}: {exc}", status=None)


def _json(response: Any) -> Manifest:
    data: Manifest = json.loads(response.data)
    return data


class _LazyApis:
    """The client's API groups, each built on first use.

    Why lazily: the kubernetes package imports an API module when its class is first looked
    up, and ``core_v1_api`` alone is 4.5 MB of source. Building all four up front cost a
    worker pod, which only ever reads and patches its AirflowAssetSync, ~90 MiB of RSS
    (measured: 67 -> 157 MiB with bytecode compiled on import).
    """

    _CLASSES = {
        "core": "CoreV1Api",
        "rbac": "RbacAuthorizationV1Api",
        "apps": "AppsV1Api",
        "custom": "CustomObjectsApi",
    }

    def __init__(self, api_client: Any) -> None:
        self._api_client = api_client
        self._built: dict[str, Any] = {}

    def __getitem__(self, group: str) -> Any:
        if group not in self._built:
            self._built[group] = getattr(k8s, self._CLASSES[group])(self._api_client)
        return self._built[group]


class KubeClient:
    """`KubeApi` over the official `kubernetes` client, returning plain dicts."""

    def __init__(self, api_client: Any, *, field_manager: str = OPERATOR_FIELD_MANAGER) -> None:
        self._field_manager = field_manager
        self._apis = _LazyApis(api_client)

    @classmethod
    def from_environment(cls, *, field_manager: str = OPERATOR_FIELD_MANAGER) -> KubeClient:
        """In-cluster credentials if present, else the kubeconfig (`KUBECONFIG`)."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(k8s.ApiClient(configuration), field_manager=field_manager)

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _error(exc, action=action) from exc

    def _child_fn(self, kind: ChildKind, verb: str) -> Callable[..., Any]:
        group, noun = _CHILD_APIS[kind]
        fn: Callable[..., Any] = getattr(self._apis[group], f"{verb}_namespaced_{noun}")
        return fn

    # children

    def get(self, kind: ChildKind, *, namespace: str, name: str) -> Manifest | None:
        try:
            response = self._call(
                f"get {kind} {namespace}/{name}", self._child_fn(kind, "read"), name, namespace
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

    def apply(self, body: Manifest) -> Manifest:
        kind = ChildKind(body["kind"])
        meta = body["metadata"]
        response = self._call(
            f"apply {kind} {meta['namespace']}/{meta['name']}",
            self._child_fn(kind, "patch"),
            meta["name"],
            meta["namespace"],
            body,
            field_manager=self._field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return _json(response)

    def delete(self, kind: ChildKind, *, namespace: str, name: str) -> bool:
        try:
            self._call(
                f"delete {kind} {namespace}/{name}",
                self._child_fn(kind, "delete"),
                name,
                namespace,
                # Background: the Deployment goes now, its ReplicaSets and pods follow via
                # the garbage collector. Foreground would hang forever without one.
                propagation_policy="Background",
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # Secrets

    def _secret_body(self, *, namespace: str, name: str) -> Manifest | None:
        try:
            response = self._call(
                f"get Secret {namespace}/{name}",
                self._apis["core"].read_namespaced_secret,
                name,
                namespace,
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

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
        try:
            response = self._call(
                f"get {api.KIND} {namespace}/{name}",
                self._apis["custom"].get_namespaced_custom_object,
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                name,
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

    def get_peering(self, *, namespace: str | None, name: str) -> Manifest | None:
        """kopf's peering object: a KopfPeering in `namespace`, or the ClusterKopfPeering."""
        custom = self._apis["custom"]
        try:
            if namespace is None:
                response = self._call(
                    f"get ClusterKopfPeering {name}",
                    custom.get_cluster_custom_object,
                    "kopf.dev",
                    "v1",
                    "clusterkopfpeerings",
                    name,
                )
            else:
                response = self._call(
                    f"get KopfPeering {namespace}/{name}",
                    custom.get_namespaced_custom_object,
                    "kopf.dev",
                    "v1",
                    namespace,
                    "kopfpeerings",
                    name,
                )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

    def patch_sync_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Manifest:
        response = self._call(
            f"patch {api.KIND} {namespace}/{name} status",
            self._apis["custom"].patch_namespaced_custom_object_status,
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            name,
            {"status": dict(status)},
            field_manager=self._field_manager,
            _content_type="application/merge-patch+json",
        )
        return _json(response)

    # the worker's Lease (coordination.k8s.io/v1): one writer per sync, see worker/lease.py
    #
    # Through the generic object API rather than `CoordinationV1Api`: that one converts the
    # body to its model and back, which writes a MicroTime with a zero microsecond as
    # "...:00+00:00", a form the API server refuses (it wants six fraction digits); the worker
    # also already has the generic API loaded for its AirflowAssetSync.

    def get_lease(self, *, namespace: str, name: str) -> Manifest | None:
        """The Lease, or None if it does not exist."""
        try:
            response = self._call(
                f"get Lease {namespace}/{name}",
                self._apis["custom"].get_namespaced_custom_object,
                *_LEASES,
                namespace,
                "leases",
                name,
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

    def create_lease(self, body: Manifest) -> Manifest:
        """Create the Lease; a KubeError with status 409 if it already exists."""
        meta = body["metadata"]
        response = self._call(
            f"create Lease {meta['namespace']}/{meta['name']}",
            self._apis["custom"].create_namespaced_custom_object,
            *_LEASES,
            meta["namespace"],
            "leases",
            body,
            field_manager=self._field_manager,
        )
        return _json(response)

    def replace_lease(self, body: Manifest) -> Manifest:
        """Replace (PUT) the Lease. `metadata.resourceVersion` makes it conditional: a
        KubeError with status 409 when someone else wrote it since that version."""
        meta = body["metadata"]
        response = self._call(
            f"update Lease {meta['namespace']}/{meta['name']}",
            self._apis["custom"].replace_namespaced_custom_object,
            *_LEASES,
            meta["namespace"],
            "leases",
            meta["name"],
            body,
            field_manager=self._field_manager,
        )
        return _json(response)


#: (group, version) of the Lease API.
_LEASES = ("coordination.k8s.io", "v1")
