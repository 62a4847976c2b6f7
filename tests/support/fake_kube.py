"""An in-memory `KubeApi` for unit tests of the operator's reconcile steps.

It models just enough of the API server to make the reconcile logic observable: objects by
(kind, namespace, name), a resourceVersion that changes only when content changes (as with
a no-op server-side apply), uids, 404 as None/False, and injectable failures. It does not
model server-side apply's field ownership: an apply replaces the object's body.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.clients import kube

Key = tuple[str, str, str]


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        #: (verb, kind) -> error raised on the next such call.
        self.failures: dict[tuple[str, str], kube.KubeError] = {}
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # test helpers

    def add_secret(
        self, *, namespace: str, name: str, keys: Mapping[str, str], version: str = "1"
    ) -> None:
        self.secrets[(namespace, name)] = {"keys": dict(keys), "version": version}

    def add_sync(self, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", f"sync-uid-{next(self._uids)}")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(api.KIND, meta["namespace"], meta["name"])] = obj
        return obj

    def put(self, obj: Mapping[str, Any]) -> None:
        """Store an object as-is (e.g. a foreign one, or one edited by a person)."""
        body = copy.deepcopy(dict(obj))
        meta = body["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(body["kind"], meta["namespace"], meta["name"])] = body

    def roll_out(self, *, namespace: str, name: str, ready: bool = True) -> dict[str, Any]:
        """Play the Deployment controller: observe the Deployment and report its pods."""
        obj = self.objects[("Deployment", namespace, name)]
        replicas = int(obj["spec"].get("replicas", 1))
        available = replicas if ready else 0
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available >= replicas else "False",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable" if ready else "ReplicaSetUpdated",
                    "message": "ReplicaSet has successfully progressed.",
                },
            ],
        }
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(obj)

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def _fail(self, verb: str, kind: str) -> None:
        error = self.failures.pop((verb, kind), None)
        if error is not None:
            raise error

    # KubeApi

    def get(self, kind: kube.ChildKind, *, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", str(kind), name))
        self._fail("get", kind)
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def apply(self, body: dict[str, Any]) -> kube.Applied:
        kind = str(body["kind"])
        meta = body["metadata"]
        self.calls.append(("apply", kind, meta["name"]))
        self._fail("apply", kind)
        key = (kind, meta["namespace"], meta["name"])
        current = self.objects.get(key)
        new = copy.deepcopy(body)
        new_meta = new["metadata"]
        if current is not None:
            # Apply never touches status; generation moves only with spec, as on a server.
            old_meta = current["metadata"]
            new_meta["uid"] = old_meta["uid"]
            spec_changed = current.get("spec") != new.get("spec")
            new_meta["generation"] = old_meta.get("generation", 1) + int(spec_changed)
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            if _content(current) == _content(new):
                return kube.Applied(body=copy.deepcopy(current), created=False)
            if _controller(current) not in (None, _controller(new)):
                raise kube.KubeError(
                    f"{kind} {meta['name']} is invalid: only one reference can have Controller"
                    " set to true",
                    status=422,
                )
        else:
            new_meta["uid"] = f"{kind.lower()}-uid-{next(self._uids)}"
            new_meta["generation"] = 1
        new_meta["resourceVersion"] = str(next(self._versions))
        self.objects[key] = new
        return kube.Applied(body=copy.deepcopy(new), created=current is None)

    def delete(self, kind: kube.ChildKind, *, namespace: str, name: str) -> bool:
        self.calls.append(("delete", str(kind), name))
        self._fail("delete", kind)
        return self.objects.pop((kind, namespace, name), None) is not None

    def read_secret(self, *, namespace: str, name: str) -> kube.SecretInfo | None:
        self.calls.append(("get", "Secret", name))
        self._fail("get", "Secret")
        secret = self.secrets.get((namespace, name))
        if secret is None:
            return None
        return kube.SecretInfo(
            name=name, resource_version=secret["version"], keys=frozenset(secret["keys"])
        )

    def get_sync(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", api.KIND, name))
        obj = self.objects.get((api.KIND, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_syncs(
        self, *, namespace: str, limit: int = 100, continue_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.calls.append(("list", api.KIND, namespace))
        self._fail("list", api.KIND)
        every = [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(self.objects.items())
            if kind == api.KIND and ns == namespace
        ]
        start = int(continue_token or 0)
        rest = str(start + limit) if start + limit < len(every) else None
        return every[start : start + limit], rest

    def patch_sync_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("patch-status", api.KIND, name))
        self._fail("patch-status", api.KIND)
        obj = self.objects.get((api.KIND, namespace, name))
        if obj is None:
            raise kube.KubeError(f"{api.KIND} {namespace}/{name} not found", status=404)
        if resource_version is not None and obj["metadata"]["resourceVersion"] != resource_version:
            raise kube.KubeError(f"{api.KIND} {namespace}/{name} was modified", status=409)
        obj.setdefault("status", {}).update(copy.deepcopy(dict(status)))
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(obj)


def _controller(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _content(obj: Mapping[str, Any]) -> Any:
    body = copy.deepcopy(dict(obj))
    body["metadata"].pop("resourceVersion", None)
    return body


def _check_protocol() -> kube.KubeApi:
    return FakeKube()  # mypy checks FakeKube satisfies the protocol
