"""The product's Airflow clients against real Airflow 2.11 and 3.3.

Unit tests pin the clients to what the API documents; these pin them to what the real servers
do: version detection, auth, uri -> id resolution (2.x path encoding, 3.x exact match among
`uri_pattern` substring hits), listings in both orders and with the 3.x time filter, 404s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_asset_sync.clients.airflow.base import (
    AssetNotFound,
    AuthFailed,
    BadRequest,
    EventQuery,
)
from airflow_asset_sync.clients.airflow.factory import connect_url
from airflow_asset_sync.clients.airflow.http import Credentials
from rig.airflow import AirflowInstance, AssetPool

pytestmark = pytest.mark.rig


@pytest.fixture(params=["airflow2", "airflow3"])
def instance(request: pytest.FixtureRequest) -> AirflowInstance:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def _creds(instance: AirflowInstance) -> Credentials:
    return Credentials(username=instance.username, password=instance.password)


async def test_detects_version_posts_and_lists(
    instance: AirflowInstance, assets: AssetPool
) -> None:
    uri, neighbour = assets.take(2)
    async with await connect_url(instance.url, _creds(instance)) as client:
        assert client.api_version == instance.api_version
        assert await client.asset_exists(uri)

        posted = [await client.post_event(uri, {"k": i}) for i in range(3)]
        await client.post_event(neighbour, {})

        truth = instance.events(uri)
        assert [p.id for p in posted] == [e["id"] for e in truth][-3:]
        assert all(p.uri == uri for p in posted)

        page = await client.list_events(EventQuery(asset_uri=uri, ascending=True))
        assert [e.id for e in page.events] == [e["id"] for e in truth]
        assert page.invalid == []
        assert {e.uri for e in page.events} == {uri}
        assert [e.extra["k"] for e in page.events[-3:]] == [0, 1, 2]

        newest_first = await client.list_events(EventQuery(asset_uri=uri, ascending=False, limit=2))
        assert [e.id for e in newest_first.events] == [posted[2].id, posted[1].id]

        # The server's clock (its Date header) bounds the cursor's re-read. What matters is
        # that it is never ahead of the true time (same host clock here); it may lag: uvicorn
        # (3.x) refreshes its cached Date once a second, so it was seen 1.7 s behind a row
        # stamped just before the request. A lag only makes the bound more conservative.
        assert page.server_time is not None
        assert page.server_time <= datetime.now(UTC)
        newest = max(e.timestamp for e in page.events)
        assert newest - page.server_time < timedelta(seconds=5)


async def test_unknown_asset_is_asset_not_found(instance: AirflowInstance) -> None:
    async with await connect_url(instance.url, _creds(instance)) as client:
        missing = "s3://aas-test/never/declared"
        assert not await client.asset_exists(missing)
        with pytest.raises(AssetNotFound):
            await client.post_event(missing, {})
        # A trailing slash is a different asset to both APIs (they compare the raw string).
        with pytest.raises(AssetNotFound):
            await client.post_event("s3://aas-test/pool/p00/", {})


async def test_wrong_password_is_auth_failed_without_the_password(
    instance: AirflowInstance,
) -> None:
    bad = Credentials(username=instance.username, password="wrong-Pw-31337")
    with pytest.raises(AuthFailed) as caught:
        async with await connect_url(instance.url, bad) as client:
            await client.list_events(EventQuery(limit=1))
    assert "wrong-Pw-31337" not in str(caught.value)
    assert "wrong-Pw-31337" not in repr(caught.value)


async def test_v2_time_filter_and_v1_refusal(
    airflow2: AirflowInstance, airflow3: AirflowInstance, assets: AssetPool
) -> None:
    (uri,) = assets.take(1)
    async with await connect_url(airflow3.url, _creds(airflow3)) as v2:
        first = await v2.post_event(uri, {})
        second = await v2.post_event(uri, {})
        page = await v2.list_events(EventQuery(asset_uri=uri))
        stamp = {e.id: e.timestamp for e in page.events}
        since = await v2.list_events(EventQuery(asset_uri=uri, timestamp_gte=stamp[second.id]))
        assert [e.id for e in since.events] == [second.id]
        before = await v2.list_events(
            EventQuery(asset_uri=uri, timestamp_gte=stamp[first.id] - timedelta(seconds=1))
        )
        assert [e.id for e in before.events] == [first.id, second.id]
    async with await connect_url(airflow2.url, _creds(airflow2)) as v1:
        with pytest.raises(BadRequest):
            await v1.list_events(EventQuery(timestamp_gte=stamp[first.id]))
