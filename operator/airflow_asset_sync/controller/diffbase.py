"""Where kopf keeps its state of each sync: the diff base in status, progress in annotations.

kopf compares a sync with the "diff base" it stored after the last successful handling to
tell a create from an update from nothing at all. Kept in an annotation (kopf's default, and
ours before), it costs every create and every spec change a PATCH of the object itself on top
of the PATCH of its status subresource (kopf splits one patch into the two requests), and each
write is a watch event for every watcher of the object. Kept in the status beside the
conditions, kopf's handler patch is one request. At 1,000 syncs applied at once that is
1,000 requests fewer to an API server that shares two cores with etcd (issue 18), and GitOps
tools, which diff metadata but never status, no longer see an operator-owned annotation.

Objects handled by an earlier version carry the annotation only. Reading falls back to it,
so an upgrade is not mistaken for 1,000 creations; the first write moves it into the status
and removes the annotation.

Handler progress (retries of a failing reconcile) stays in annotations under our group: it
is written only while a handler fails, and a typed status schema cannot describe kopf's
progress records without `x-kubernetes-preserve-unknown-fields`. Its storage leaves out the
``kopf-managed`` marker annotation kopf adds on its first write (so that other kopf-based
operators can tell our annotations from theirs): that write alone would bring back the
second PATCH on every create, and nothing of ours reads it.
"""

from __future__ import annotations

import kopf

from airflow_asset_sync.api.spec import GROUP

#: The status field (a JSON string, as kopf writes it) declared in the CRD's status schema.
STATUS_FIELD = "status.lastHandledConfiguration"
#: The annotation earlier versions kept it in.
LEGACY_KEY = "last-handled-configuration"


class StatusDiffBase(kopf.MultiDiffBaseStorage):
    """Read the status field, else the legacy annotation; write the status field only."""

    def __init__(self) -> None:
        self._status = kopf.StatusDiffBaseStorage(field=STATUS_FIELD)
        self._legacy = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key=LEGACY_KEY)
        # Both strip their own field from the essence, so neither the stored copy nor the
        # annotation's removal ever reads as a change of the sync.
        super().__init__([self._status, self._legacy])

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._status.store(body=body, patch=patch, essence=essence)
        annotations = body.metadata.annotations
        for key in self._legacy.make_keys(self._legacy.key, body=body):
            if key in annotations:
                patch.metadata.annotations[key] = None


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage under our group, without its marker annotation."""

    def __init__(self) -> None:
        super().__init__(prefix=GROUP)

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        """Not stored: see the module's docstring (kopf calls this on every store)."""
