"""InProcessChannel: publish returns only after every target committed; restart redelivers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from airflow_asset_sync.api.events import Envelope, SourceEvent
from airflow_asset_sync.worker.channel import ChannelClosed, InProcessChannel

from .fakes import T0, envelope


def envs(*ids: int) -> list[Envelope]:
    return [
        envelope(SourceEvent(id=i, uri="s3://b/x", timestamp=T0 + timedelta(seconds=i)))
        for i in ids
    ]


async def test_publish_waits_for_every_target_to_commit() -> None:
    channel = InProcessChannel(targets=["a", "b"])
    a, b = channel.subscription("a"), channel.subscription("b")
    publish = asyncio.create_task(channel.publish(envs(1, 2)))

    got_a = await a.fetch(10, timeout_s=1)
    got_b = await b.fetch(10, timeout_s=1)
    assert [d.envelope.event.id for d in got_a if d.envelope] == [1, 2]
    assert [d.envelope.event.id for d in got_b if d.envelope] == [1, 2]

    await a.commit(got_a)
    await asyncio.sleep(0)
    assert not publish.done()  # b has not committed: not safe yet
    await b.commit(got_b[:1])
    await asyncio.sleep(0)
    assert not publish.done()  # b committed only the first
    await b.commit(got_b[1:])
    await asyncio.wait_for(publish, timeout=1)


async def test_restarted_subscription_gets_uncommitted_deliveries_again() -> None:
    channel = InProcessChannel(targets=["a"])
    publish = asyncio.create_task(channel.publish(envs(1, 2, 3)))
    sub = channel.subscription("a")
    first = await sub.fetch(2, timeout_s=1)
    await sub.commit(first[:1])
    # crash: a new consumer starts from the last commit
    again = channel.subscription("a")
    await again.start()
    redelivered = await again.fetch(10, timeout_s=1)
    assert [d.position for d in redelivered] == [(0, 2), (0, 3)]
    await again.commit(redelivered)
    await asyncio.wait_for(publish, timeout=1)
    assert channel.committed("a") == 3


async def test_fetch_returns_empty_after_timeout() -> None:
    channel = InProcessChannel(targets=["a"])
    assert await channel.subscription("a").fetch(10, timeout_s=0.01) == []


async def test_fetch_wakes_up_when_something_is_published() -> None:
    channel = InProcessChannel(targets=["a"])
    sub = channel.subscription("a")
    fetch = asyncio.create_task(sub.fetch(10, timeout_s=30))
    await asyncio.sleep(0)
    publish = asyncio.create_task(channel.publish(envs(1)))
    got = await asyncio.wait_for(fetch, timeout=1)
    assert len(got) == 1
    await sub.commit(got)
    await publish


async def test_stop_fails_a_waiting_publish() -> None:
    channel = InProcessChannel(targets=["a"])
    publish = asyncio.create_task(channel.publish(envs(1)))
    await asyncio.sleep(0)
    await channel.stop()
    with pytest.raises(ChannelClosed):
        await publish
    with pytest.raises(ChannelClosed):
        await channel.publish(envs(2))


async def test_published_keys_is_empty_and_empty_publish_returns() -> None:
    channel = InProcessChannel(targets=["a"])
    assert await channel.published_keys("http://source") == set()
    await asyncio.wait_for(channel.publish([]), timeout=1)


def test_unknown_target_is_rejected() -> None:
    channel = InProcessChannel(targets=["a"])
    with pytest.raises(KeyError):
        channel.subscription("b")
