"""A steady stream of real asset events, and the exactly-once verdict on where they landed.

`EventStream` creates events in a real source Airflow at a set rate from a background
thread, while a test breaks something. It writes with plain httpx calls written against the
API docs (asset ids resolved once, then one POST per event), independently of the product's
clients.

The verdict never trusts what the stream *thinks* it created: a POST that failed ambiguously
may still have created an event. `source_ids` reads the truth back from the source (every
event of the stream's assets that is not itself a synced copy), `delivery` counts the
target's events of those assets by marker, and `Verdict` compares the two: lost = in the
source and never in the target; duplicated = in the target more than once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from rig.airflow import AirflowInstance
from rig.kafka import KafkaBroker
from rig.sync import MARKER, sync_manifests


class EventStream:
    """`total` events over `uris` (round robin) at `rate` per second, in a daemon thread."""

    def __init__(
        self,
        source: AirflowInstance,
        uris: Sequence[str],
        *,
        total: int,
        rate: float,
        label: str = "stream",
    ) -> None:
        self.source = source
        self.uris = list(uris)
        self.total = total
        self.rate = rate
        self.label = label
        self.created = 0
        self.errors: Counter[str] = Counter()
        self.started_at = 0.0
        self.finished_at = 0.0
        self.done = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"stream-{label}", daemon=True)

    def start(self) -> EventStream:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 600) -> EventStream:
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"{self.label}: still producing after {timeout_s:.0f}s")
        if self._failure is not None:
            raise AssertionError(f"{self.label}: producer failed: {self._failure!r}")
        return self

    def wait_for(self, count: int, timeout_s: float = 300) -> None:
        """Until at least `count` events were created (a point mid-stream)."""
        deadline = time.monotonic() + timeout_s
        while self.created < count and not self.done.is_set():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label}: only {self.created} of {count} created")
            time.sleep(0.1)

    @property
    def duration_s(self) -> float:
        return (self.finished_at or time.monotonic()) - self.started_at

    def _run(self) -> None:
        self.started_at = time.monotonic()
        try:
            with self.source.client() as client:
                post = self._poster(client)
                for i in range(self.total):
                    due = self.started_at + i / self.rate
                    now = time.monotonic()
                    if due > now:
                        time.sleep(due - now)  # pacing the producer, not awaiting a condition
                    post(self.uris[i % len(self.uris)], {"stream": self.label, "i": i})
                    self.created += 1
        except BaseException as exc:
            self._failure = exc
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def _poster(self, client: httpx.Client) -> Callable[[str, dict[str, Any]], None]:
        source = self.source
        if source.major == 2:
            path = "/api/v1/datasets/events"

            def body(uri: str, extra: dict[str, Any]) -> dict[str, Any]:
                return {"dataset_uri": uri, "extra": extra}

        else:
            path = "/api/v2/assets/events"
            ids = {uri: source.asset_id(uri, client) for uri in self.uris}

            def body(uri: str, extra: dict[str, Any]) -> dict[str, Any]:
                return {"asset_id": ids[uri], "extra": extra}

        def post(uri: str, extra: dict[str, Any]) -> None:
            # SQLite-backed Airflow answers 5xx or stalls now and then under write load; try
            # again. A retried POST may create the event twice in the source: harmless, the
            # verdict reads the source's truth afterwards.
            for attempt in range(10):
                try:
                    reply = client.post(path, json=body(uri, extra))
                except httpx.TransportError as exc:
                    self.errors[type(exc).__name__] += 1
                else:
                    if reply.status_code == 200:
                        return
                    self.errors[f"HTTP {reply.status_code}"] += 1
                    if reply.status_code < 500:
                        reply.raise_for_status()
                time.sleep(min(2.0, 0.1 * 2**attempt))  # back-off between write attempts
            raise AssertionError(f"{self.label}: cannot create events in {source.url}")

        return post


def source_ids(source: AirflowInstance, uris: Sequence[str]) -> set[int]:
    """Every event of `uris` in the source that is not itself a synced copy (the truth)."""
    ids: set[int] = set()
    with source.client() as client:
        for uri in uris:
            for event in source.events(uri, client):
                if MARKER not in event["extra"]:
                    ids.add(int(event["id"]))
    return ids


def delivery(target: AirflowInstance, uris: Sequence[str], origin: str) -> Counter[int]:
    """Source event id -> how many events in `target` carry a marker for it from `origin`."""
    counts: Counter[int] = Counter()
    with target.client() as client:
        for uri in uris:
            for event in target.events(uri, client):
                marker = event["extra"].get(MARKER)
                if isinstance(marker, dict) and marker.get("origin") == origin:
                    counts[int(marker["event_id"])] += 1
    return counts


@dataclass
class Verdict:
    """Lost and duplicated events at one target, by marker."""

    expected: int
    delivered: int
    lost: list[int] = field(default_factory=list)
    duplicated: dict[int, int] = field(default_factory=dict)
    unexpected: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, ids: set[int], counts: Counter[int]) -> Verdict:
        return cls(
            expected=len(ids),
            delivered=sum(1 for i in ids if counts.get(i)),
            lost=sorted(ids - set(counts)),
            duplicated={i: n for i, n in sorted(counts.items()) if n > 1},
            unexpected=sorted(set(counts) - ids),
        )

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def summary(self) -> str:
        return (
            f"{self.delivered}/{self.expected} delivered, {len(self.lost)} lost "
            f"{self.lost[:10]}, {len(self.duplicated)} duplicated "
            f"{dict(list(self.duplicated.items())[:10])}, {len(self.unexpected)} unexpected"
        )


def await_verdict(
    source: AirflowInstance,
    target: AirflowInstance,
    uris: Sequence[str],
    origin: str,
    *,
    timeout_s: float = 300,
    alive: Callable[[], None] | None = None,
) -> Verdict:
    """Wait until every source event of `uris` is in `target` (or time runs out).

    Returns the verdict at that point; duplicates are reported, not waited on. `alive` is
    called between looks and may raise to end the wait early (a process that died).
    """
    ids = source_ids(source, uris)
    deadline = time.monotonic() + timeout_s
    while True:
        verdict = Verdict.of(ids, delivery(target, uris, origin))
        if not verdict.lost or time.monotonic() > deadline:
            return verdict
        if alive is not None:
            alive()
        time.sleep(1.0)  # a full recount lists thousands of events: look once a second


def note(test: str, **figures: Any) -> None:
    """One line of figures per test on stderr (visible with ``-s`` or in a failure report)."""
    import json
    import sys

    print(f"[reliability] {json.dumps({'test': test, **figures}, default=str)}", file=sys.stderr)


def recent(
    instance: AirflowInstance, uris: Sequence[str], since: datetime
) -> list[tuple[int, datetime, dict[str, Any]]]:
    """(id, timestamp, extra) of the events of `uris` stamped at or after `since` (3.x only:
    2.x has no time filter). Cheap enough to call every few seconds on a long soak."""
    assert instance.major == 3, "only Airflow 3.x filters events by time"
    out: list[tuple[int, datetime, dict[str, Any]]] = []
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with instance.client() as client:
        for uri in uris:
            asset_id = instance.asset_id(uri, client)
            offset = 0
            while True:
                reply = client.get(
                    "/api/v2/assets/events",
                    params={
                        "asset_id": asset_id,
                        "timestamp_gte": stamp,
                        "order_by": "timestamp",
                        "limit": 100,
                        "offset": offset,
                    },
                )
                reply.raise_for_status()
                rows = reply.json()["asset_events"]
                for row in rows:
                    ts = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))
                    out.append((int(row["id"]), ts, row.get("extra") or {}))
                offset += len(rows)
                if len(rows) < 100:
                    break
    return out


def kafka_sync(
    name: str,
    source: AirflowInstance,
    target: AirflowInstance,
    uris: Sequence[str],
    kafka: KafkaBroker,
    topic: str,
) -> list[dict[str, Any]]:
    """The suite's usual sync: `source` -> one target "t", only `uris`, through Kafka."""
    return sync_manifests(
        name, source, [("t", target)], include=uris, kafka=kafka.bootstrap, topic=topic
    )
