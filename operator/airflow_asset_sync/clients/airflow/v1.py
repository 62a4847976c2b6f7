"""Airflow 2.x client: the ``/api/v1`` dataset endpoints (2.4+; POST needs 2.9+).

2.x addresses a dataset by URI for writes (``POST {dataset_uri, extra}``) but filters the
listing by numeric ``dataset_id``, so the URI is resolved through
``GET /api/v1/datasets/{uri}`` only when a listing is narrowed to one asset. Dataset rows
are never deleted by 2.x (they are marked orphaned), so a resolved id stays valid and is
cached for the life of the client.

Connexion validates strictly: an unknown query parameter is a 400. The listing therefore
sends exactly ``limit``, ``offset``, ``order_by`` and, when filtering, ``dataset_id``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal
from urllib.parse import quote

from airflow_asset_sync.clients.airflow.base import (
    AssetNotFound,
    BadRequest,
    BadResponse,
    EventPage,
    EventQuery,
    PostedEvent,
)
from airflow_asset_sync.clients.airflow.common import ClientBase
from airflow_asset_sync.clients.airflow.http import not_found
from airflow_asset_sync.clients.airflow.wire import (
    check_page_size,
    check_uri,
    page_params,
    parse_event_page,
    parse_posted_event,
    queued_count,
    type_name,
)

EVENTS_PATH = "/api/v1/datasets/events"
DATASETS_PATH = "/api/v1/datasets"
QUEUED_PATH = "/api/v1/datasets/queuedEvent"


class AirflowV1Client(ClientBase):
    """`AirflowClient` for Airflow 2.x."""

    @property
    def api_version(self) -> Literal["v1"]:
        return "v1"

    async def list_events(self, query: EventQuery) -> EventPage:
        """One page of ``GET /api/v1/datasets/events``, ordered by timestamp.

        2.x has no time filter (apache/airflow#41126), so ``timestamp_gte`` is refused
        rather than silently ignored; incremental reads use ``offset`` and dedupe on id.
        An unknown ``asset_uri`` raises `AssetNotFound`.
        """
        if query.timestamp_gte is not None:
            raise BadRequest(
                "Airflow 2.x (/api/v1) cannot filter events by time; page with offset instead"
            )
        params = page_params(query)
        if query.asset_uri is not None:
            params["dataset_id"] = await self.dataset_id(query.asset_uri)
        reply = await self._http.request("GET", EVENTS_PATH, params=params)
        page = parse_event_page(reply.json(), schema="v1", where=reply.where)
        page = check_page_size(page, limit=query.limit, where=reply.where)
        return replace(page, server_time=reply.date)

    async def post_event(
        self, uri: str, extra: dict[str, Any], *, partition_key: str | None = None
    ) -> PostedEvent:
        """``POST /api/v1/datasets/events`` -> 200. 2.x always adds ``from_rest_api: true``.

        2.x has no partitions: ``partition_key`` is not sent (the caller's marker keeps it).

        The URI is compared raw (not normalised) by the server: ``s3://b/x/`` is a 404 even
        if ``s3://b/x`` exists. A 405 means the server predates 2.9.
        """
        check_uri(uri)
        reply = await self._http.request(
            "POST",
            EVENTS_PATH,
            body={"dataset_uri": uri, "extra": extra},
            write=True,
            allow=(404, 405),
        )
        if reply.status == 404:
            raise not_found(reply, f"dataset {uri!r}")
        if reply.status == 405:
            raise BadRequest(f"{reply.where}: creating dataset events needs Airflow 2.9 or later")
        return parse_posted_event(reply.json(), schema="v1", where=reply.where, requested_uri=uri)

    async def asset_exists(self, uri: str) -> bool:
        try:
            await self.dataset_id(uri, fresh=True)
        except AssetNotFound:
            return False
        return True

    async def queued_consumers(self, uri: str) -> int:
        """``GET /api/v1/datasets/queuedEvent/{uri}`` (2.9+): the DAGs with it queued.

        2.x answers 404 both for "nothing queued" and for an unknown dataset, so a 404 is
        told apart by resolving the dataset (cached: a known dataset costs no extra call).
        """
        check_uri(uri)
        reply = await self._http.request(
            "GET", f"{QUEUED_PATH}/{quote(uri, safe='')}", allow=(404,)
        )
        if reply.status == 404:
            await self.dataset_id(uri)  # AssetNotFound if the dataset is unknown
            return 0
        return queued_count(reply.json(), where=reply.where)

    async def dataset_id(self, uri: str, *, fresh: bool = False) -> int:
        """The dataset id for exactly this URI (``GET /api/v1/datasets/{uri}``).

        The URI is percent-encoded whole (``/`` too), as Airflow's own UI does; the route is
        a ``path`` converter, so the server decodes it back before the exact lookup.
        """
        check_uri(uri)
        if not fresh and uri in self._ids:
            return self._ids[uri]
        reply = await self._http.request(
            "GET", f"{DATASETS_PATH}/{quote(uri, safe='')}", allow=(404,)
        )
        if reply.status == 404:
            self._ids.pop(uri, None)
            raise not_found(reply, f"dataset {uri!r}")
        body = reply.json_object()
        dataset_id, found_uri = body.get("id"), body.get("uri")
        if not isinstance(dataset_id, int) or isinstance(dataset_id, bool):
            raise BadResponse(
                f"{reply.where}: dataset has no integer 'id' (got {type_name(dataset_id)})"
            )
        if found_uri != uri:
            shown = repr(found_uri[:200]) if isinstance(found_uri, str) else type_name(found_uri)
            raise BadResponse(f"{reply.where}: asked for dataset {uri!r}, got {shown}")
        self._ids[uri] = dataset_id
        return dataset_id
