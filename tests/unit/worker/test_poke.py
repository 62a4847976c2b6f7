"""Pokes: the gate (token, rate limit, counts), the HTTP endpoint, and the poller's wake."""

from __future__ import annotations

import asyncio
import http.client
import threading

from airflow_asset_sync.clients.airflow.base import Unavailable
from airflow_asset_sync.worker.health import Health
from airflow_asset_sync.worker.metrics import WorkerMetrics, start_metrics_server
from airflow_asset_sync.worker.poke import PokeGate, TokenBucket, Wakeup
from airflow_asset_sync.worker.poller import POKE_FOLLOW_UPS_S, PollPace, PollResult

from .fakes import settle, wait_until
from .test_poller import Rig, at

TOKEN = "poke-Tok-3b9e1f"


def gate(now: list[float], *, burst: int = 3, rate: float = 1.0) -> tuple[PokeGate, list[int]]:
    woken: list[int] = []
    metrics = WorkerMetrics()
    g = PokeGate(
        token=TOKEN,
        wake=lambda: woken.append(1),
        metrics=metrics,
        monotonic=lambda: now[0],
        rate_per_s=rate,
        burst=burst,
    )
    return g, woken


def test_only_the_right_bearer_token_wakes_the_poller() -> None:
    g, woken = gate([0.0])
    assert g.handle(None) == "unauthorized"
    assert g.handle("Basic " + TOKEN) == "unauthorized"
    assert g.handle("Bearer ") == "unauthorized"
    assert g.handle("Bearer " + TOKEN[:-1]) == "forbidden"
    assert g.handle("Bearer " + TOKEN + "x") == "forbidden"
    assert woken == []
    assert g.handle("Bearer " + TOKEN) == "accepted"
    assert woken == [1]
    assert TOKEN not in repr(g)


def test_a_flood_is_cut_to_the_burst_then_the_rate() -> None:
    now = [0.0]
    g, woken = gate(now, burst=3, rate=2.0)
    results = [g.handle("Bearer " + TOKEN) for _ in range(10)]
    assert results == ["accepted"] * 3 + ["rate_limited"] * 7
    now[0] += 0.5  # one token back at 2/s
    assert [g.handle("Bearer " + TOKEN) for _ in range(2)] == ["accepted", "rate_limited"]
    assert len(woken) == 4


def test_bucket_never_saves_more_than_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=100.0, burst=2, monotonic=lambda: now[0])
    now[0] += 3600
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_without_a_token_every_poke_is_refused_as_disabled() -> None:
    metrics = WorkerMetrics()
    g = PokeGate(token=None, wake=lambda: None, metrics=metrics, monotonic=lambda: 0.0)
    assert g.handle("Bearer anything") == "disabled"
    assert metrics.value("aas_pokes_total", {"result": "disabled"}) == 1


def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def test_http_endpoint_answers_pokes_and_refuses_bad_requests() -> None:
    metrics = WorkerMetrics()
    woken = threading.Event()
    g = PokeGate(token=TOKEN, wake=woken.set, metrics=metrics, monotonic=lambda: 0.0, burst=1)
    health = Health(monotonic=lambda: 0.0)
    server = start_metrics_server(metrics=metrics, health=health, port=0, host="127.0.0.1", poke=g)
    auth = {"Authorization": "Bearer " + TOKEN}
    try:
        assert request(server.port, "POST", "/poke") == 401
        assert request(server.port, "POST", "/poke", {"Authorization": "Bearer forged"}) == 403
        assert not woken.is_set()
        assert request(server.port, "POST", "/poke", auth) == 202
        assert woken.is_set()
        assert request(server.port, "POST", "/poke", auth) == 429  # burst of one
        assert request(server.port, "GET", "/poke", auth) == 405
        assert request(server.port, "PUT", "/poke", auth) == 405
        assert request(server.port, "OPTIONS", "/poke") == 405
        assert request(server.port, "POST", "/metrics", auth) == 404
        assert request(server.port, "POST", "/poke", auth, body=b"x" * 5000) == 413
        counts = {
            r: metrics.value("aas_pokes_total", {"result": r})
            for r in ("accepted", "unauthorized", "forbidden", "rate_limited", "bad_request")
        }
        assert counts == {
            "accepted": 1,
            "unauthorized": 1,
            "forbidden": 1,
            "rate_limited": 1,
            "bad_request": 4,
        }
        assert b'aas_pokes_total{result="forbidden"} 1.0' in metrics.exposition()
    finally:
        server.close()


def test_endpoint_without_push_configured_says_not_found() -> None:
    metrics = WorkerMetrics()
    server = start_metrics_server(
        metrics=metrics, health=Health(monotonic=lambda: 0.0), port=0, host="127.0.0.1"
    )
    try:
        assert request(server.port, "POST", "/poke", {"Authorization": "Bearer x"}) == 404
    finally:
        server.close()


def test_wakeup_from_another_thread_sets_the_event_in_the_loop() -> None:
    async def main() -> None:
        wakeup = Wakeup()
        thread = threading.Thread(target=wakeup.set_threadsafe)
        thread.start()
        thread.join()
        await asyncio.wait_for(wakeup.event.wait(), timeout=5)

    asyncio.run(main())


def polls(rig: Rig) -> int:
    return len([r for r in rig.server.requests if r[0] == "list_events"])


async def test_a_poke_cuts_the_idle_sleep_short() -> None:
    wake = asyncio.Event()
    rig = Rig(wake=wake, poll_interval=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: rig.clock.sleeping == [30.0], what="the idle sleep")
    event = rig.server.emit("s3://b/x", at=at(1))
    wake.set()
    # No time passes on the fake clock: only the poke can have caused this read.
    await wait_until(lambda: rig.publisher.ids == [event.id], what="the poked read")
    assert rig.metrics.value("aas_poke_polls_total") == 1
    stop.set()
    await task


async def test_many_pokes_during_one_read_cause_exactly_one_more_read() -> None:
    wake = asyncio.Event()
    rig = Rig(wake=wake, poll_interval=30.0)
    rig.server.list_gate = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: rig.server.listing == 1, what="a read under way")
    for _ in range(5):
        wake.set()
    rig.server.list_gate.set()
    await wait_until(lambda: bool(rig.clock.sleeping), what="the poller to sleep")
    # The first read and one more for all five pokes; then the first follow-up, waiting.
    assert polls(rig) == 2
    assert rig.metrics.value("aas_poke_polls_total") == 1
    assert rig.clock.sleeping == [POKE_FOLLOW_UPS_S[0]]
    stop.set()
    await task


async def test_a_poke_that_finds_nothing_yet_reads_again_soon_then_rests() -> None:
    """The listener runs before Airflow commits the event: the follow-ups catch it."""
    wake = asyncio.Event()
    rig = Rig(wake=wake, poll_interval=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: rig.clock.sleeping == [30.0], what="the idle sleep")
    wake.set()  # the event is not committed yet
    await wait_until(lambda: rig.clock.sleeping == [0.05], what="the first follow-up")
    event = rig.server.emit("s3://b/x", at=at(1))  # committed now
    await rig.clock.advance(0.05)
    await wait_until(lambda: rig.publisher.ids == [event.id], what="the follow-up read")
    # Found: back to the active pace (interval / 5), no more follow-ups.
    await wait_until(lambda: rig.clock.sleeping == [6.0], what="the active pace")
    stop.set()
    await task


async def test_pokes_do_not_cut_an_error_back_off_short() -> None:
    wake = asyncio.Event()
    rig = Rig(wake=wake, poll_interval=30.0)
    rig.server.list_failures.append(Unavailable("503"))
    stop = asyncio.Event()
    task = asyncio.create_task(rig.poller.run(stop))
    await wait_until(lambda: bool(rig.clock.sleeping), what="the back-off")
    backoff = rig.clock.sleeping[0]
    wake.set()
    await settle()
    assert polls(rig) == 1  # still backing off
    await rig.clock.advance(backoff)
    await wait_until(lambda: polls(rig) == 2, what="the read after the back-off")
    stop.set()
    await task


def test_pace_follow_ups_end_after_their_schedule() -> None:
    pace = PollPace(30.0)
    nothing = PollResult(
        read=0, published=0, filtered=0, looped=0, already_published=0, held=0, more=False
    )
    pace.poked()
    delays = [pace.after(nothing, 0.0) for _ in range(len(POKE_FOLLOW_UPS_S) + 1)]
    assert delays == [*POKE_FOLLOW_UPS_S, 30.0]
