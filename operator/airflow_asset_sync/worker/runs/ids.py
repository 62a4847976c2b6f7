"""A completion (a finished DAG run or task instance) as an asset event: id, URI, extra.

Id scheme. An asset event's id is the source database's primary key, a positive integer.
A completion has no such row, so its id is derived, and made **negative** so that it can
never equal an asset event id of the same origin, in the poller's ``published_keys``, the
checkpoint's ``seen_ids`` or the replayer's dedup key ``(origin, event_id, sync)``::

    id = -(1 + (blake2b-64("completion", kind, dag_id, run_id, task_id, map_index,
                            end_date, asset URI) >> 1))

``kind`` is ``dag_run`` or ``task``; ``task_id`` and ``map_index`` are empty for a run. The
fields are joined with NUL (which none of them may contain), so two completions share an id
only on a 63-bit hash collision (about 1 in 10^19 per pair). It is stable: the same
completion read again (after a restart, in the overlap window, by a replay) gets the same
id, so it is delivered once. Why ``end_date`` is part of it: a run that is cleared and runs
again ends again, which is a new completion (a consumer should run again), while re-reading
the same end changes nothing. Why the asset URI: two selectors may publish the same run
under two assets, and each of those is its own event.
"""

from __future__ import annotations

import fnmatch
import hashlib
from typing import Any

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.spec import DagRunSelector
from airflow_asset_sync.clients.airflow.base import Completion


def completion_id(completion: Completion, uri: str) -> int:
    """The completion's event id: negative, stable, 64-bit (see the module docstring)."""
    kind = "dag_run" if completion.task_id is None else "task"
    map_index = "" if completion.map_index is None else str(completion.map_index)
    parts = [
        "completion",
        kind,
        completion.dag_id,
        completion.run_id,
        completion.task_id or "",
        map_index,
        completion.end_date.isoformat(),
        uri,
    ]
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return -(1 + (int.from_bytes(digest, "big") >> 1))


def is_completion_id(event_id: int) -> bool:
    """Whether an event id is a completion's (negative) rather than an asset event's."""
    return event_id < 0


def matches(selector: DagRunSelector, completion: Completion) -> bool:
    """Whether `selector` asks for this completion: DAG id glob, task (or none), state."""
    if completion.task_id != selector.task_id:
        return False  # a run selector takes runs only; a task selector its task only
    if completion.state not in selector.states:
        return False
    return fnmatch.fnmatchcase(completion.dag_id, selector.dag_id)


def completion_extra(completion: Completion, conf: dict[str, Any] | None) -> dict[str, Any]:
    """What a consumer in the target reads from the event: the source run and its end.

    ``conf`` is the run's (for a task, looked up from its run; None if the run is gone).
    """
    extra: dict[str, Any] = {
        "completion": "dag_run" if completion.task_id is None else "task",
        "dag_id": completion.dag_id,
        "run_id": completion.run_id,
        "state": completion.state,
        "logical_date": (
            completion.logical_date.isoformat() if completion.logical_date is not None else None
        ),
        "end_date": completion.end_date.isoformat(),
        "conf": conf,
    }
    if completion.task_id is not None:
        extra["task_id"] = completion.task_id
        extra["map_index"] = completion.map_index
    return extra


def completion_event(
    completion: Completion,
    selector: DagRunSelector,
    *,
    instance: str,
    conf: dict[str, Any] | None,
) -> SourceEvent:
    """The `SourceEvent` that carries one completion under the selector's asset.

    Raises ValueError if it cannot be one (an ``extra`` above the size limit: a huge
    ``conf``); the caller logs and counts it.
    """
    uri = selector.asset_uri(
        instance=instance,
        dag_id=completion.dag_id,
        run_id=completion.run_id,
        task_id=completion.task_id,
        map_index=completion.map_index,
    )
    return SourceEvent(
        id=completion_id(completion, uri),
        uri=uri,
        extra=completion_extra(completion, conf),
        timestamp=completion.end_date,
        source_dag_id=completion.dag_id,
        source_run_id=completion.run_id,
        source_task_id=completion.task_id,
        source_map_index=completion.map_index,
    )
