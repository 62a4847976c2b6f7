"""The applied-hash of a child: what lets a resync tell "unchanged" without asking the API.

A hash of the whole body the operator would apply (labels, owner references and spec), put
on the body as `naming.APPLIED_HASH_ANNOTATION` before it is applied. Server-side apply
keeps it as the operator's field, so the body a watch delivers says which desired state it
last took; anything else that changed it shows in its managed fields (`changed_by_others`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from airflow_asset_sync.resources import naming


def applied_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the body (without its own applied-hash annotation), as sorted JSON."""
    essence = copy.deepcopy(dict(body))
    annotations = essence.get("metadata", {}).get("annotations")
    if annotations is not None:
        annotations.pop(naming.APPLIED_HASH_ANNOTATION, None)
        if not annotations:
            essence["metadata"].pop("annotations")
    text = json.dumps(essence, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def stamped(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `body` carrying its applied-hash annotation."""
    out = copy.deepcopy(dict(body))
    out["metadata"].setdefault("annotations", {})[naming.APPLIED_HASH_ANNOTATION] = applied_hash(
        body
    )
    return out


def hash_of(obj: Mapping[str, Any]) -> str | None:
    """The applied-hash an object carries, if any."""
    value = (obj.get("metadata", {}).get("annotations") or {}).get(naming.APPLIED_HASH_ANNOTATION)
    return None if value is None else str(value)
