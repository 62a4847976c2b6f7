"""(6) What a user would pick instead, measured in the same harness as the sync.

- **Naive poller**: what a sensor-style DAG or a cron script does: every 60 s, for each asset,
  read the source's newest events and POST the new ones to the target. Written here with
  plain httpx, as such a script would be; one poller per (asset set, target) pair.
- **AssetWatcher**: Airflow 3's event-driven scheduling: an `Asset` with an `AssetWatcher`
  whose trigger is the Kafka provider's `KafkaMessageQueueTrigger` at its defaults
  (`poll_timeout=1`, `poll_interval=5`), consuming a topic a producer writes to. It runs in
  a separate Airflow 3.3 whose virtualenv adds `apache-airflow-providers-apache-kafka` and
  `apache-airflow-providers-common-messaging` (cached next to the rig's venvs; the rig's
  own venv is not touched), with the triggerer running.

Latency is measured as for the sync: source time -> the event row's own `timestamp` in the
receiving Airflow. For the AssetWatcher the source time is when the broker acknowledged
the message (acks=all), the moment the event "exists" for that design.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import Results, log, memory, summary
from bench.stack import Stack, pool
from bench.traffic import CreatedEvent, EventWriter, collect, parse_ts, steady
from rig.airflow import AIRFLOW3, AirflowInstance
from rig.cache import CACHE, cached_in_place, phase
from rig.procs import Server
from rig.tools import uv_venv

# -- the naive poller ------------------------------------------------------------------------

NAIVE_MARKER = "naive_copy"


class NaivePoller:
    """Every `interval_s`: per asset, GET the newest page of events, POST the unseen ones."""

    def __init__(
        self,
        source: AirflowInstance,
        target: AirflowInstance,
        uris: list[str],
        interval_s: float,
    ) -> None:
        self.source = source
        self.target = target
        self.uris = uris
        self.interval_s = interval_s
        self.source_requests = 0
        self.copied = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._src = source.client()
        self._writer = EventWriter(target)
        self._ids: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def start(self) -> None:
        self._last = {uri: self._newest_id(uri) for uri in self.uris}
        self._thread = threading.Thread(target=self._run, name="naive-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._src.close()
        self._writer.close()

    def _list(self, uri: str) -> list[dict[str, Any]]:
        if self.source.major == 2:
            key, path, rows = "dataset_id", "/api/v1/datasets/events", "dataset_events"
        else:
            key, path, rows = "asset_id", "/api/v2/assets/events", "asset_events"
        if uri not in self._ids:
            self.source_requests += 1
            self._ids[uri] = self.source.asset_id(uri, self._src)
        params = {key: self._ids[uri], "order_by": "-timestamp", "limit": 100}
        self.source_requests += 1
        response = AirflowInstance._get(self._src, path, params=params)
        return list(response.json()[rows])

    def _newest_id(self, uri: str) -> int:
        return max((int(r["id"]) for r in self._list(uri)), default=0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for uri in self.uris:
                try:
                    rows = [r for r in self._list(uri) if int(r["id"]) > self._last[uri]]
                    for row in sorted(rows, key=lambda r: int(r["id"])):
                        extra = {
                            NAIVE_MARKER: {"event_id": row["id"], "timestamp": row["timestamp"]}
                        }
                        self._writer.post(uri, extra)
                        self._last[uri] = int(row["id"])
                        self.copied += 1
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def run_naive(
    stack: Stack,
    results: Results,
    *,
    interval_s: float,
    duration_s: float,
    rate: float,
) -> None:
    source, target = stack.airflows("a2", "a3t")
    uris = pool("naive")
    poller = NaivePoller(source, target, uris, interval_s)
    poller.start()
    since = datetime.now(UTC) - timedelta(seconds=1)
    count = int(duration_s * rate)
    log(f"naive poller every {interval_s:g}s: {count} events at {rate:g}/s, 2.11 -> 3.3")
    t0 = time.monotonic()
    created = steady(source, uris, count=count, rate=rate, extra=lambda i: {"bench": "naive"})
    try:
        deadline = time.monotonic() + interval_s * 2 + 30
        while time.monotonic() < deadline:
            rows = collect(target, since)
            seen = _naive_matches(created.events, rows)
            if len(seen) >= len(created.events):
                break
            time.sleep(2.0)
        elapsed = time.monotonic() - t0
    finally:
        poller.stop()
    rows = collect(target, since)
    seen = _naive_matches(created.events, rows)
    latencies = [seen[e.id] for e in created.events if e.id in seen]
    figures: dict[str, Any] = {
        "interval_s": interval_s,
        "events_created": len(created.events),
        "delivered": len(latencies),
        "latency_s": summary(latencies),
        "source_requests_per_min": round(poller.source_requests / elapsed * 60, 2),
        "source_requests_per_min_per_target_note": "one poller per target: x N targets",
        "errors": poller.errors[:5],
    }
    results.record("naive", **figures)
    results.series.setdefault("latency", {})["naive"] = {
        "label": f"naive poller, {interval_s:g}s interval (2.11 -> 3.3)",
        "latencies": latencies,
        "timeline": [],
    }
    s = figures["latency_s"]
    log(f"naive: p50 {s.get('p50', 0):.1f}s p99 {s.get('p99', 0):.1f}s ({len(latencies)} events)")


def _naive_matches(created: list[CreatedEvent], rows: list[dict[str, Any]]) -> dict[int, float]:
    by_id = {e.id: e for e in created}
    out: dict[int, float] = {}
    for row in rows:
        marker = (row.get("extra") or {}).get(NAIVE_MARKER)
        if isinstance(marker, dict) and int(marker["event_id"]) in by_id:
            event = by_id[int(marker["event_id"])]
            lat = (parse_ts(row["timestamp"]) - event.timestamp).total_seconds()
            out[event.id] = min(out.get(event.id, lat), lat)
    return out


# -- the AssetWatcher ------------------------------------------------------------------------

KAFKA_PROVIDER = "apache-airflow-providers-apache-kafka==2.1.0"
MESSAGING_PROVIDER = "apache-airflow-providers-common-messaging==2.1.2"
WATCHED_ASSET = "aas_bench_watched"
WATCH_DAG = f'''
"""Bench: an asset fed by an AssetWatcher on a Kafka topic (KafkaMessageQueueTrigger, defaults)."""
from datetime import datetime

from airflow.providers.apache.kafka.triggers.msg_queue import KafkaMessageQueueTrigger
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher

trigger = KafkaMessageQueueTrigger(topics=[{{topic!r}}], apply_function="aas_bench_apply.apply")
asset = Asset({WATCHED_ASSET!r}, watchers=[AssetWatcher(name="aas_bench_watcher", trigger=trigger)])

with DAG("aas_bench_watch", schedule=[asset], start_date=datetime(2024, 1, 1), catchup=False,
         max_active_runs=1):
    EmptyOperator(task_id="noop")
'''
APPLY_MODULE = '''
"""The AssetWatcher's apply_function: the message's JSON becomes the event's payload."""
import json


def apply(message):
    return json.loads(message.value())
'''


def watcher_venv() -> Path:
    """Airflow 3.3 plus the Kafka and common-messaging providers, cached beside the rig's."""

    def build(path: Path) -> None:
        uv_venv(path, f"apache-airflow=={AIRFLOW3}", KAFKA_PROVIDER, MESSAGING_PROVIDER)

    tag = KAFKA_PROVIDER.split("==")[1]
    return cached_in_place(
        CACHE / "venvs" / f"airflow-{AIRFLOW3}-kafka-{tag}", build, name="airflow+kafka venv"
    )


@dataclass
class WatcherAirflow(AirflowInstance):
    """An Airflow 3.3 from the providers venv, with the watcher DAG and a triggerer."""

    bootstrap: str = ""
    topic: str = "aas-bench-watched"

    @functools.cached_property
    def bin(self) -> Path:
        return watcher_venv() / "bin"

    @property
    def pylib(self) -> Path:
        return self.home / "pylib"

    def env(self) -> dict[str, str]:
        env = super().env()
        connection = {
            "conn_type": "kafka",
            "extra": {
                "bootstrap.servers": self.bootstrap,
                "group.id": "aas-bench-watcher",
                # The topic exists before the triggerer's first consumer joins; without this a
                # new group would start at the end and miss what was produced meanwhile.
                "auto.offset.reset": "earliest",
            },
        }
        env["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(connection)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.pylib), env.get("PYTHONPATH", "")) if p
        )
        return env

    def start(self) -> None:
        with phase("watcher airflow: provision venv with the Kafka providers"):
            watcher_venv()
        (self.home / "dags").mkdir(parents=True, exist_ok=True)
        self.pylib.mkdir(parents=True, exist_ok=True)
        (self.pylib / "aas_bench_apply.py").write_text(APPLY_MODULE)
        (self.home / "dags" / "aas_bench_watch.py").write_text(WATCH_DAG.format(topic=self.topic))
        super().start()
        triggerer = Server(
            "airflow watcher triggerer",
            [str(self.bin / "airflow"), "triggerer"],
            log_path=self.home / "logs" / "triggerer.log",
            env=self.env(),
        )
        triggerer.start()
        self.servers.append(triggerer)


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, count: int, rate: float, first: int) -> list[float]:
    """`count` messages at `rate`; returns the time each was acknowledged (acks=all)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    acked: list[float] = []
    try:
        started = time.monotonic()
        for i in range(count):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            value = json.dumps({"seq": first + i, "bench": "assetwatcher"}).encode()
            await producer.send_and_wait(topic, value)
            acked.append(time.time())
    finally:
        await producer.stop()
    return acked


def _watched(instance: AirflowInstance, since: datetime) -> dict[int, float]:
    """seq -> unix time of the asset event the watcher created for it (earliest if twice)."""
    out: dict[int, float] = {}
    for row in collect(instance, since):
        payload = (row.get("extra") or {}).get("payload")
        if row.get("name") == WATCHED_ASSET and isinstance(payload, dict) and "seq" in payload:
            ts = parse_ts(row["timestamp"]).timestamp()
            seq = int(payload["seq"])
            out[seq] = min(out.get(seq, ts), ts)
    return out


def run_assetwatcher(
    stack: Stack,
    results: Results,
    *,
    messages: int,
    rate: float,
    burst: int,
    burst_rate: float,
    drain_s: float,
) -> None:
    """Warm-up, then `messages` at a `rate` it can sustain (its best-case latency), then
    `burst` at `burst_rate` (the sync's latency-run rate: the same load) with `drain_s` to
    turn them into events."""
    kafka = stack.kafka
    topic = "aas-bench-watched"
    asyncio.run(_create_topic(kafka.bootstrap, topic))
    instance = WatcherAirflow(
        version=AIRFLOW3, home=stack.workdir / "watcher", bootstrap=kafka.bootstrap, topic=topic
    )
    try:
        instance.start()
        since = datetime.now(UTC) - timedelta(minutes=5)
        # Warm-up: the watcher is live once one message has become an event.
        t_warm = time.monotonic()
        asyncio.run(_produce(kafka.bootstrap, topic, 1, 1.0, first=-1))
        deadline = time.monotonic() + 180
        while -1 not in _watched(instance, since):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "the AssetWatcher created no event for a warm-up message within 180s; "
                    "triggerer log tail:\n" + instance.servers[-1].log_tail(30)
                )
            time.sleep(1.0)
        warm_s = time.monotonic() - t_warm
        figures: dict[str, Any] = {
            "warmup_to_first_event_s": round(warm_s, 1),
            "trigger_defaults": {"poll_timeout": 1, "poll_interval": 5},
            "providers": [KAFKA_PROVIDER, MESSAGING_PROVIDER],
        }
        parts = (("steady", messages, rate, 0), ("burst", burst, burst_rate, 100_000))
        for part, count, part_rate, first in parts:
            log(f"assetwatcher {part}: {count} messages at {part_rate:g}/s")
            acked = asyncio.run(_produce(kafka.bootstrap, topic, count, part_rate, first=first))
            deadline = time.monotonic() + drain_s
            wanted = set(range(first, first + count))
            seen = _watched(instance, since)
            while not wanted <= set(seen) and time.monotonic() < deadline:
                time.sleep(1.0)
                seen = _watched(instance, since)
            cutoff = time.time()
            latencies = [seen[first + i] - acked[i] for i in range(count) if first + i in seen]
            # Undelivered messages count with their age at the cut-off (a lower bound).
            censored = [cutoff - acked[i] for i in range(count) if first + i not in seen]
            times = sorted(seen[i] for i in wanted if i in seen)
            span = (times[-1] - times[0]) if len(times) > 1 else 0.0
            figures[part] = {
                "messages": count,
                "rate": part_rate,
                "delivered": len(latencies),
                "undelivered_at_cutoff": len(censored),
                "cutoff_s_after_last_message": drain_s,
                "latency_s": summary(latencies + censored),
                "delivered_latency_s": summary(latencies),
                "events_per_s_while_delivering": round((len(times) - 1) / span, 2)
                if span
                else None,
            }
            results.series.setdefault("latency", {})[f"assetwatcher-{part}"] = {
                "label": f"AssetWatcher + KafkaMessageQueueTrigger, {part_rate:g}/s",
                "latencies": latencies,
                "timeline": [],
            }
            s = figures[part]["delivered_latency_s"]
            log(
                f"assetwatcher {part}: {len(latencies)}/{count} delivered; p50 "
                f"{s.get('p50', 0):.2f}s p99 {s.get('p99', 0):.2f}s; "
                f"{figures[part]['events_per_s_while_delivering']} events/s"
            )
        proc = instance.servers[-1].proc
        triggerer_mem = memory(proc.pid) if proc else None
        figures["triggerer_rss_mib"] = round(triggerer_mem.rss_mib, 1) if triggerer_mem else None
        results.record("assetwatcher", **figures)
    finally:
        instance.stop()
