"""What the 2.x and 3.x clients share: owning an `AirflowHttp` and its lifecycle.

The two API versions differ in paths, parameters and payloads (each in its own module);
construction, introspection and closing are the same and live here once, and so do the
completion listings of `spec.dagRuns` (`runs`: one shape in both versions, by prefix).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, Self

from airflow_asset_sync.clients.airflow.base import CompletionPage, CompletionQuery
from airflow_asset_sync.clients.airflow.http import AirflowHttp
from airflow_asset_sync.clients.airflow.runs import get_dag_run_conf, list_completions


class ClientBase:
    """Owns its `AirflowHttp` and closes it in `aclose` (or on leaving ``async with``)."""

    def __init__(self, http: AirflowHttp, *, server_version: str | None = None) -> None:
        self._http = http
        self._server_version = server_version
        #: URI -> the instance's dataset/asset id, resolved on demand.
        self._ids: dict[str, int] = {}

    @property
    def page_limit(self) -> int:
        return self._http.options.page_limit

    @property
    def server_version(self) -> str | None:
        """Airflow's version string if auto-detection read it, else None."""
        return self._server_version

    @property
    def http(self) -> AirflowHttp:
        return self._http

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(url={self._http.url!r}, server_version={self._server_version!r})"

    @property
    def api_version(self) -> Literal["v1", "v2"]:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_dag_runs(self, query: CompletionQuery) -> CompletionPage:
        """Finished DAG runs, oldest end first (`runs.list_completions`)."""
        return await list_completions(self._http, self.api_version, "dag_runs", query)

    async def list_task_instances(self, query: CompletionQuery) -> CompletionPage:
        """Finished task instances (`runs.list_completions`; unordered in 2.x)."""
        return await list_completions(self._http, self.api_version, "task_instances", query)

    async def dag_run_conf(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """One run's ``conf`` (`runs.get_dag_run_conf`)."""
        return await get_dag_run_conf(self._http, self.api_version, dag_id, run_id)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
