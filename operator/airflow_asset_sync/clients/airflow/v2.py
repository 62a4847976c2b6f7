"""Airflow 3.x client: the ``/api/v2`` asset endpoints.

3.x writes by numeric ``asset_id`` only (the POST body forbids ``uri``; apache/airflow#53615),
because a URI alone is no longer unique once assets have names: the ``asset`` table is unique
on ``(name, uri)``, and only *active* assets are unique on ``uri``. So a URI is resolved via
``GET /api/v2/assets?uri_pattern=<uri>`` (a case-insensitive substring/LIKE match, hence a
superset) keeping the one active row whose ``uri`` is exactly equal.

Resolved ids are cached: the replayer writes the same few assets over and over. An id can go
stale when an asset is deactivated and another with the same URI becomes active, which a
POST reveals as 404; the cache entry is then dropped, the URI resolved again and the POST
repeated once if the id changed. A URI that does not resolve is not cached (the asset may be
deployed in the target any minute).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from airflow_asset_sync.clients.airflow.base import (
    AssetNotFound,
    BadResponse,
    EventPage,
    EventQuery,
    PostedEvent,
)
from airflow_asset_sync.clients.airflow.common import ClientBase
from airflow_asset_sync.clients.airflow.http import Reply, not_found
from airflow_asset_sync.clients.airflow.wire import (
    check_page_size,
    check_uri,
    format_timestamp,
    page_params,
    parse_event_page,
    parse_posted_event,
    queued_count,
    supports_partition_key,
    type_name,
)

EVENTS_PATH = "/api/v2/assets/events"
ASSETS_PATH = "/api/v2/assets"
VERSION_PATH = "/api/v2/version"

#: How many pages of substring matches to scan for the exact URI before giving up. With
#: 100 per page that is 5000 assets sharing a substring: beyond it, naming is the problem.
MAX_RESOLVE_PAGES = 50


class AirflowV2Client(ClientBase):
    """`AirflowClient` for Airflow 3.x."""

    #: Whether the server takes ``partition_key`` (None: not asked yet).
    _partitions: bool | None = None

    @property
    def api_version(self) -> Literal["v2"]:
        return "v2"

    async def list_events(self, query: EventQuery) -> EventPage:
        """One page of ``GET /api/v2/assets/events`` (id is the server's tie-breaker).

        ``timestamp_gte`` must be timezone-aware: it is sent as UTC with ``Z``. An unknown
        ``asset_uri`` raises `AssetNotFound`.
        """
        params = page_params(query)
        if query.timestamp_gte is not None:
            params["timestamp_gte"] = format_timestamp(query.timestamp_gte)
        if query.asset_uri is not None:
            params["asset_id"] = await self.asset_id(query.asset_uri)
        reply = await self._http.request("GET", EVENTS_PATH, params=params)
        page = parse_event_page(reply.json(), schema="v2", where=reply.where)
        page = check_page_size(page, limit=query.limit, where=reply.where)
        return replace(page, server_time=reply.date)

    async def post_event(
        self, uri: str, extra: dict[str, Any], *, partition_key: str | None = None
    ) -> PostedEvent:
        """``POST /api/v2/assets/events {asset_id, extra[, partition_key]}`` -> 200.

        ``extra`` is always sent (even empty): 3.x then adds ``from_rest_api: true``,
        which keeps 2.x and 3.x targets alike. ``partition_key`` is sent only to 3.2+
        (`partitions_supported`); 3.0/3.1 forbid the field.
        """
        check_uri(uri)
        cached = uri in self._ids
        asset_id = await self.asset_id(uri)
        if partition_key is not None and not await self.partitions_supported():
            partition_key = None
        reply = await self._post(asset_id, extra, partition_key)
        if reply.status == 404:
            self._ids.pop(uri, None)
            if not cached:
                raise not_found(reply, f"asset {uri!r} (id {asset_id})")
            fresh_id = await self.asset_id(uri, fresh=True)
            if fresh_id == asset_id:
                raise not_found(reply, f"asset {uri!r} (id {asset_id})")
            reply = await self._post(fresh_id, extra, partition_key)
            if reply.status == 404:
                self._ids.pop(uri, None)
                raise not_found(reply, f"asset {uri!r} (id {fresh_id})")
        return parse_posted_event(reply.json(), schema="v2", where=reply.where, requested_uri=uri)

    async def asset_exists(self, uri: str) -> bool:
        try:
            await self.asset_id(uri, fresh=True)
        except AssetNotFound:
            return False
        return True

    async def queued_consumers(self, uri: str) -> int:
        """``GET /api/v2/assets/{asset_id}/queuedEvents``: the DAGs with the asset queued.

        An empty list (not a 404) means none; a 404 with a cached id means the asset was
        re-created under a new id, so the id is resolved once more.
        """
        check_uri(uri)
        cached = uri in self._ids
        asset_id = await self.asset_id(uri)
        path = f"{ASSETS_PATH}/{asset_id}/queuedEvents"
        reply = await self._http.request("GET", path, allow=(404,))
        if reply.status == 404:
            self._ids.pop(uri, None)
            if not cached:
                raise not_found(reply, f"asset {uri!r} (id {asset_id})")
            fresh_id = await self.asset_id(uri, fresh=True)
            path = f"{ASSETS_PATH}/{fresh_id}/queuedEvents"
            reply = await self._http.request("GET", path, allow=(404,))
            if reply.status == 404:
                self._ids.pop(uri, None)
                raise not_found(reply, f"asset {uri!r} (id {fresh_id})")
        return queued_count(reply.json(), where=reply.where)

    async def asset_id(self, uri: str, *, fresh: bool = False) -> int:
        """The id of the active asset whose URI is exactly ``uri``; `AssetNotFound` if none."""
        check_uri(uri)
        if not fresh and uri in self._ids:
            return self._ids[uri]
        limit = self.page_limit
        for page in range(MAX_RESOLVE_PAGES):
            params: dict[str, str | int] = {
                "uri_pattern": uri,
                "only_active": "true",
                "order_by": "id",
                "limit": limit,
                "offset": page * limit,
            }
            reply = await self._http.request("GET", ASSETS_PATH, params=params)
            rows, total = self._asset_rows(reply)
            for row in rows:
                if isinstance(row, dict) and row.get("uri") == uri:
                    found = row.get("id")
                    if not isinstance(found, int) or isinstance(found, bool):
                        raise BadResponse(
                            f"{reply.where}: asset {uri!r} has no integer 'id'"
                            f" (got {type_name(found)})"
                        )
                    self._ids[uri] = found
                    return found
            seen = (page + 1) * limit
            if len(rows) < limit or (total is not None and seen >= total):
                break
        else:
            raise BadResponse(
                f"GET {self._http.url}{ASSETS_PATH}: more than {MAX_RESOLVE_PAGES * limit}"
                f" assets match {uri!r}; cannot find the exact one"
            )
        self._ids.pop(uri, None)
        raise AssetNotFound(f"GET {self._http.url}{ASSETS_PATH}: no active asset with uri {uri!r}")

    async def partitions_supported(self) -> bool:
        """Whether this server takes ``partition_key`` on create (Airflow 3.2+).

        From the version auto-detection read, else from one ``GET /api/v2/version`` (then
        cached). A server that does not say counts as not supporting it (see
        `wire.supports_partition_key`).
        """
        if self._partitions is None:
            version = self.server_version
            if version is None:
                reply = await self._http.request(
                    "GET", VERSION_PATH, authenticate=False, allow=(404,)
                )
                found = reply.json_object().get("version") if reply.status == 200 else None
                version = found if isinstance(found, str) else None
            self._partitions = supports_partition_key(version)
        return self._partitions

    async def _post(
        self, asset_id: int, extra: dict[str, Any], partition_key: str | None = None
    ) -> Reply:
        body: dict[str, Any] = {"asset_id": asset_id, "extra": extra}
        if partition_key is not None:
            body["partition_key"] = partition_key
        return await self._http.request(
            "POST",
            EVENTS_PATH,
            body=body,
            write=True,
            allow=(404,),
        )

    @staticmethod
    def _asset_rows(reply: Reply) -> tuple[list[object], int | None]:
        body = reply.json_object()
        rows = body.get("assets")
        if not isinstance(rows, list):
            raise BadResponse(
                f"{reply.where}: expected 'assets' to be an array, got {type_name(rows)}"
            )
        total = body.get("total_entries")
        if isinstance(total, int) and not isinstance(total, bool):
            return rows, total
        return rows, None
