"""Completed DAG runs and task instances of a source, for `spec.dagRuns` (both API versions).

The listings are the same shape in 2.x and 3.x (only the prefix differs):

- ``GET {prefix}/dags/~/dagRuns`` with ``end_date_gte``, ``state`` (repeated), ``order_by=
  end_date``, ``limit``, ``offset``: 2.11 `dag_run_endpoint.get_dag_runs`, 3.3
  `routes/public/dag_run.get_dag_runs`. 3.x appends the primary key as tie-breaker; 2.x sorts
  by the one column only (equal ``end_date``s have no fixed order across pages).
- ``GET {prefix}/dags/~/dagRuns/~/taskInstances`` with ``end_date_gte``, ``state``,
  ``limit``, ``offset``; ``order_by=end_date`` in 3.x only: 2.x validates strictly and has no
  ordering parameter for this listing (connexion answers 400 to one), so its rows come in
  the database's order and the caller reads every page of the window.
- ``GET {prefix}/dags/{dag_id}/dagRuns/{run_id}``: one run, for the ``conf`` a task row
  lacks.

The data types and the `RunSource` protocol are in `base` (the engine may import only
that module). The `~` stands for "every DAG the user may read"; the DAG id globs of the
selectors are applied by the caller, since neither version takes a glob. Rows are checked
for their exact JSON types as the events are (`wire`): one bad row is reported in
``invalid`` (never silently dropped), the rest of the page stays usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from airflow_asset_sync.clients.airflow.base import (
    BadRequest,
    BadResponse,
    Completion,
    CompletionPage,
    CompletionQuery,
    Listing,
)
from airflow_asset_sync.clients.airflow.http import AirflowHttp, Reply
from airflow_asset_sync.clients.airflow.wire import (
    MAX_STRING_CHARS,
    format_timestamp,
    json_problem,
    type_name,
)

PREFIXES: dict[str, str] = {"v1": "/api/v1", "v2": "/api/v2"}


def _params(query: CompletionQuery, *, ordered: bool) -> dict[str, str | int | Sequence[str]]:
    params: dict[str, str | int | Sequence[str]] = {"limit": query.limit, "offset": query.offset}
    if ordered:
        params["order_by"] = "-end_date" if query.descending else "end_date"
    elif query.descending:
        raise BadRequest("Airflow 2.x cannot order task instances: read them unordered")
    if query.end_date_gte is not None:
        params["end_date_gte"] = format_timestamp(query.end_date_gte)
    else:
        # A row without an end time has not finished: the filter keeps every finished one.
        params["end_date_gte"] = "1970-01-01T00:00:00.000000Z"
    if query.states:
        params["state"] = list(query.states)
    return params


async def list_completions(
    http: AirflowHttp, api_version: str, listing: Listing, query: CompletionQuery
) -> CompletionPage:
    """One page of finished DAG runs or task instances (see the module docstring)."""
    prefix = PREFIXES[api_version]
    if listing == "dag_runs":
        path, key, ordered = f"{prefix}/dags/~/dagRuns", "dag_runs", True
    else:
        path, key = f"{prefix}/dags/~/dagRuns/~/taskInstances", "task_instances"
        ordered = api_version == "v2"
    reply = await http.request("GET", path, params=_params(query, ordered=ordered))
    body = reply.json_object()
    rows = body.get(key)
    if not isinstance(rows, list):
        raise BadResponse(f"{reply.where}: expected {key!r} to be an array, got {type_name(rows)}")
    total = body.get("total_entries")
    parsed: list[Completion] = []
    invalid: list[str] = []
    for index, row in enumerate(rows):
        try:
            parsed.append(parse_completion(row, task=listing == "task_instances"))
        except ValueError as exc:
            invalid.append(f"{reply.where}: row {index}: {exc}")
    return CompletionPage(
        rows=parsed,
        total_entries=total if isinstance(total, int) and not isinstance(total, bool) else None,
        invalid=invalid,
    )


async def get_dag_run_conf(
    http: AirflowHttp, api_version: str, dag_id: str, run_id: str
) -> dict[str, Any] | None:
    """``GET {prefix}/dags/{dag_id}/dagRuns/{run_id}``: its ``conf`` (``{}`` if null); None
    on 404. The run may still be running: a task ends before its run does."""
    path = f"{PREFIXES[api_version]}/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
    reply: Reply = await http.request("GET", path, allow=(404,))
    if reply.status == 404:
        return None
    conf = reply.json_object().get("conf")
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise BadResponse(f"{reply.where}: 'conf' must be an object, got {type_name(conf)}")
    problem = json_problem(conf, depth=1)
    if problem:
        raise BadResponse(f"{reply.where}: 'conf' {problem}")
    return conf


def _string(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string, got {type_name(value)}")
    if len(value) > MAX_STRING_CHARS:
        raise ValueError(f"{key!r} is {len(value)} characters, above {MAX_STRING_CHARS}")
    return value


def _opt_time(row: dict[str, Any], key: str) -> datetime | None:
    return None if row.get(key) is None else _time(row, key)


def _time(row: dict[str, Any], key: str) -> datetime:
    value = row.get(key)
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{key!r} must be an ISO-8601 string, got {type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{key!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{key!r} has no time zone")
    return parsed.astimezone(UTC)


def parse_completion(row: object, *, task: bool) -> Completion:
    """One listing row; ValueError naming the field (never its value) if it is not valid.

    ``logical_date`` is 3.x's name and 2.x's newer one (2.x rows also have
    ``execution_date``, read when ``logical_date`` is missing); it is null for 3.x runs
    without a logical date.
    """
    if not isinstance(row, dict):
        raise ValueError(f"row must be an object, got {type_name(row)}")
    dag_id = _string(row, "dag_id")
    run_id = _string(row, "dag_run_id")
    state = _string(row, "state")
    end_date = _time(row, "end_date")
    logical_key = "logical_date" if "logical_date" in row else "execution_date"
    logical_date = _opt_time(row, logical_key)
    if task:
        task_id = _string(row, "task_id")
        map_index = row.get("map_index", -1)
        if not isinstance(map_index, int) or isinstance(map_index, bool):
            raise ValueError(f"'map_index' must be an integer, got {type_name(map_index)}")
        return Completion(
            dag_id=dag_id,
            run_id=run_id,
            state=state,
            end_date=end_date,
            logical_date=logical_date,
            task_id=task_id,
            map_index=map_index,
        )
    conf = row.get("conf")
    if conf is None:
        conf = {}
    if not isinstance(conf, dict):
        raise ValueError(f"'conf' must be an object, got {type_name(conf)}")
    problem = json_problem(conf, depth=1)
    if problem:
        raise ValueError(f"'conf' {problem}")
    return Completion(
        dag_id=dag_id,
        run_id=run_id,
        state=state,
        end_date=end_date,
        logical_date=logical_date,
        conf=conf,
    )
