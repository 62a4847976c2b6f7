"""The applied-hash of a child: what lets a resync tell "unchanged" without asking the API.

A hash of the whole body the operator would apply (labels, owner references and spec), put
on the body as `naming.APPLIED_HASH_ANNOTATION` before it is applied. Server-side apply
keeps it as the operator's field, so the body a watch delivers says which desired state it
last took; anything else that changed it shows in its managed fields (`changed_by_others`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from airflow_asset_sync.resources.naming import APPLIED_HASH_ANNOTATION


def applied_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the body (without its own applied-hash annotation), as sorted JSON."""
    meta = dict(body.get("metadata") or {})
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH_ANNOTATION
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    text = json.dumps({**body, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def stamped(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `body` carrying its applied-hash annotation (the body is left as it is)."""
    meta = dict(body.get("metadata") or {})
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        APPLIED_HASH_ANNOTATION: applied_hash(body),
    }
    return {**body, "metadata": meta}


def hash_of(obj: Mapping[str, Any]) -> str | None:
    """The applied-hash an object carries, if any."""
    value = (obj.get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    return None if value is None else str(value)
