"""What the operator's watches last showed: a small fingerprint per child, per Secret read.

Why: a periodic resync used to cost every sync eleven API requests (the sync, its two
Secrets, a GET and an apply of each of its four children) whether or not anything had
changed: at 1,000 syncs and a 60 s interval, 180 requests a second against an idle cluster.
The operator already watches its children (to put back a deleted or edited one at once), so
it knows what they look like; a resync only needs to ask the API when that differs from what
it would apply.

Only a fingerprint is kept per child, never its body: the controller uid (a child taken
over by someone else is refused, not fixed), the applied-hash the operator stamped on it
(`resources.fingerprint`), whether someone else changed it last, and, for the worker
Deployment, the rollout state Ready is computed from. A few hundred bytes per child.

A missing fingerprint (the watch has not delivered the child yet, or it was deleted) means
"ask the API", so the cache can be late without being wrong. One that says "as applied"
while the live child differs lasts only until the change's watch event arrives, and that
event reconciles the sync at once (`handlers.on_child_event`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_asset_sync.clients.kube import OPERATOR_FIELD_MANAGER, KubeApi, SecretInfo
from airflow_asset_sync.controller.conditions import WorkerState, worker_state
from airflow_asset_sync.resources.fingerprint import hash_of

ChildKey = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True, slots=True)
class SeenChild:
    """One child as its last watch event showed it."""

    resource_version: str | None
    controller_uid: str | None
    applied_hash: str | None
    changed_by_others: bool
    #: The Deployment's rollout state (None for other kinds).
    worker: WorkerState | None

    def as_applied(self, *, owner_uid: str, desired_hash: str) -> bool:
        """True when applying `desired_hash` to this child would change nothing."""
        return (
            self.controller_uid == owner_uid
            and self.applied_hash == desired_hash
            and not self.changed_by_others
        )


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller (owner reference with `controller: true`)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def changed_by_others(obj: Mapping[str, Any], *, field_manager: str) -> bool:
    """True when the newest change to `obj` (its status aside) was made by another manager.

    Read from `metadata.managedFields`: every writer is recorded there with the time of its
    last change. A person's `kubectl edit`, `kubectl scale` (the scale subresource) or a
    script shows up as a manager other than the operator's; the Deployment controller's
    status writes are left out. False when the object carries no managed fields.

    An entry without a time counts as the newest: the API server records none for writes
    through the scale subresource (`kubectl scale`).
    """
    entries = [
        entry
        for entry in obj.get("metadata", {}).get("managedFields") or ()
        if entry.get("subresource") != "status"
    ]
    if not entries:
        return False
    # "~" sorts after any RFC 3339 time: untimed entries are the newest.
    newest = max(str(entry.get("time") or "~") for entry in entries)
    return any(
        entry.get("manager") != field_manager
        for entry in entries
        if str(entry.get("time") or "~") == newest
    )


def seen_child(obj: Mapping[str, Any], *, field_manager: str) -> SeenChild:
    version = obj.get("metadata", {}).get("resourceVersion")
    return SeenChild(
        resource_version=None if version is None else str(version),
        controller_uid=controller_uid(obj),
        applied_hash=hash_of(obj),
        changed_by_others=changed_by_others(obj, field_manager=field_manager),
        worker=worker_state(obj) if obj.get("kind") == "Deployment" else None,
    )


def _older(version: str | None, than: str | None) -> bool:
    """resourceVersions are etcd revisions, so numbers in practice; anything else is never
    taken as older."""
    if version is None or than is None or not version.isdigit() or not than.isdigit():
        return False
    return int(version) < int(than)


#: How a reconcile asks for a child's fingerprint: (kind, namespace, name) -> it, or None.
ChildLookup = Callable[[str, str, str], SeenChild | None]


class ObservedChildren:
    """The fingerprints of every child the watches delivered, thread-safe."""

    def __init__(self, *, field_manager: str = OPERATOR_FIELD_MANAGER) -> None:
        self._field_manager = field_manager
        self._guard = threading.Lock()
        self._seen: dict[ChildKey, SeenChild] = {}

    def record(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Keep what a watch event (or the operator's own apply) showed of a child.

        An event older than what is kept (a lower resourceVersion: the operator's apply is
        recorded at once, and its watch event may come after an earlier one) is ignored.
        """
        meta = obj.get("metadata", {})
        key = (str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        seen = None if deleted else seen_child(obj, field_manager=self._field_manager)
        with self._guard:
            if seen is None:
                self._seen.pop(key, None)
                return
            kept = self._seen.get(key)
            if kept is None or not _older(seen.resource_version, kept.resource_version):
                self._seen[key] = seen

    def __call__(self, kind: str, namespace: str, name: str) -> SeenChild | None:
        with self._guard:
            return self._seen.get((kind, namespace, name))

    def __len__(self) -> int:
        with self._guard:
            return len(self._seen)


class SecretsSeenRecently:
    """`read_secret` answered from a read made less than `max_age_seconds` ago.

    Syncs mostly share Secrets (every sync from one source names its credentials), so a
    resync round over 1,000 syncs reads each distinct Secret once instead of twice per sync
    (`max_age_seconds` half the interval: each round still reads every Secret afresh, and
    a rotation rolls its workers within one interval, as before). Creates and updates read
    through one with a couple of seconds and `remember_missing=False`: a burst of new syncs
    shares the reads, and a Secret created just after its sync is seen at the next retry.
    """

    def __init__(
        self,
        kube_api: KubeApi,
        *,
        max_age_seconds: float,
        remember_missing: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube_api
        self._max_age = max_age_seconds
        self._remember_missing = remember_missing
        self._clock = clock
        self._guard = threading.Lock()
        self._read: dict[tuple[str, str], tuple[float, SecretInfo | None]] = {}

    def read_secret(self, *, namespace: str, name: str) -> SecretInfo | None:
        now = self._clock()
        with self._guard:
            hit = self._read.get((namespace, name))
            if hit is not None and now - hit[0] < self._max_age:
                return hit[1]
        info = self._kube.read_secret(namespace=namespace, name=name)
        if info is None and not self._remember_missing:
            return None
        with self._guard:
            self._read[(namespace, name)] = (now, info)
            if len(self._read) > 4 * 1024:  # drop the old reads of Secrets no sync uses now
                self._read = {k: v for k, v in self._read.items() if now - v[0] < self._max_age}
        return info


def essential(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the conditions are computed from, and events are posted on: no managed fields,
    no annotations (kopf's last-handled configuration is as large as the spec), and of the
    worker's status only its failures (a target's parked events alone may be 1 MiB)."""
    meta = body.get("metadata", {})
    kept = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
    status = body.get("status") or {}
    source = status.get("source")
    trimmed: dict[str, Any] = {
        key: status[key] for key in ("observedGeneration", "conditions") if key in status
    }
    if isinstance(source, Mapping) and "failure" in source:
        trimmed["source"] = {"failure": source["failure"]}
    targets = [
        {"name": target.get("name"), "failure": target["failure"]}
        for target in status.get("targets") or ()
        if isinstance(target, Mapping) and "failure" in target
    ]
    if targets:
        trimmed["targets"] = targets
    return {
        # apiVersion and kind too: events are posted on this copy (their involvedObject).
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {key: meta[key] for key in kept if key in meta},
        "spec": {"suspend": bool((body.get("spec") or {}).get("suspend", False))},
        "status": trimmed,
    }


class ObservedSyncs:
    """Each served sync as its last watch event showed it (`essential`), by uid.

    A worker Deployment's event refreshes its sync's conditions from this instead of reading
    the sync: a GET per Deployment event was a fifth of the requests of 1,000 new syncs.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {}

    def record(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Keep `body` unless a newer version is kept already (the operator records its own
        status writes at once; their watch events, and earlier ones, may come after)."""
        uid = str(body.get("metadata", {}).get("uid", ""))
        with self._guard:
            if deleted:
                self._seen.pop(uid, None)
                return
            kept = self._seen.get(uid)
            version = body.get("metadata", {}).get("resourceVersion")
            if kept is not None and _older(
                None if version is None else str(version),
                kept.get("metadata", {}).get("resourceVersion"),
            ):
                return
            self._seen[uid] = essential(body)

    def __call__(self, uid: str) -> dict[str, Any] | None:
        with self._guard:
            return self._seen.get(uid)

    def __len__(self) -> int:
        with self._guard:
            return len(self._seen)
