"""What the 2.x and 3.x clients share: owning an `AirflowHttp` and its lifecycle.

The two API versions differ in paths, parameters and payloads (each in its own module);
construction, introspection and closing are the same and live here once.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from airflow_asset_sync.clients.airflow.http import AirflowHttp


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

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
