"""`airflow-asset-sync verify`: did every source event of a window reach every target, once?

Why a command of its own: the status counters say how much moved, not whether each event did,
and after an incident the question is "did every event arrive?". This answers it from the
two instances themselves, per target and per asset:

- expected: the source events whose time is in the window and that the sync delivers, by the
  worker's own rules (`EventFilter` on `spec.assets`; an event that carries a marker is a
  copy from elsewhere and is never forwarded, `poller`);
- delivered: the target's events, on the asset as the target's rewrite rules map it, whose
  marker names this source, this sync and one of those events.

Missing and duplicated events are listed by source event id; an asset the target does not
know is reported as such (its events are parked, or skipped under `onUnknownAsset: skip`),
and still counts as missing. Exit code 0 only when nothing is missing or duplicated.

It reads one page at a time, at the client's page limit, and only the window: gentler on a
source than the worker's own catch-up. The comparison is pure (`compare`); the reads are in
`scan_source` and `scan_target`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_asset_sync.api.events import MARKER_KEY, Envelope, Marker, SourceEvent
from airflow_asset_sync.api.spec import SyncSpec, Target, parse_duration
from airflow_asset_sync.clients.airflow.base import AirflowClient
from airflow_asset_sync.worker.filters import EventFilter
from airflow_asset_sync.worker.scan import pages

#: Progress is reported every this many events read (long scans of a busy source).
PROGRESS_EVERY = 1000


class BadWindow(ValueError):
    """`--since` / `--until` do not make a window in the past; the message names the flag."""


class Unreadable(RuntimeError):
    """An instance could not be read; the message names which (source, or target and name)."""


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    def __contains__(self, when: datetime) -> bool:
        return self.since <= when <= self.until


def parse_window(since: str, until: str | None, now: datetime) -> Window:
    """`since` and `until` as RFC 3339 times with an offset, or durations back from `now`
    (`24h`, `90m`); `until` defaults to `now`. Rejects a window that is not in the past."""

    def when(flag: str, value: str) -> datetime:
        try:
            return now - parse_duration(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadWindow(
                f"{flag} {value!r} is neither a duration such as 24h nor an RFC 3339 time"
            ) from None
        if parsed.tzinfo is None:
            raise BadWindow(f"{flag} {value!r} needs a time zone offset, e.g. 'Z'")
        return parsed

    start = when("--since", since)
    end = when("--until", until) if until is not None else now
    if start >= now:
        raise BadWindow(f"--since {since!r} is not in the past ({start.isoformat()})")
    if end <= start:
        raise BadWindow(f"--until {until!r} is not after --since {since!r}")
    return Window(since=start, until=min(end, now))


@dataclass
class AssetReport:
    source_uri: str
    target_uri: str
    expected: int
    delivered: int
    missing: list[int]
    duplicated: dict[int, int]
    #: False: the target has no such asset (its events are parked, or skipped).
    in_target: bool = True

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicated


@dataclass
class TargetReport:
    name: str
    assets: list[AssetReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.assets)


@dataclass
class Report:
    sync: str
    source: str
    window: Window
    source_events: int
    invalid_rows: int
    targets: list[TargetReport]
    #: The source events read, by id (what a repair writes); not part of the report's output.
    events: dict[int, SourceEvent] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {
            "sync": self.sync,
            "source": self.source,
            "window": {
                "since": self.window.since.isoformat(),
                "until": self.window.until.isoformat(),
            },
            "sourceEventsRead": self.source_events,
            "invalidRows": self.invalid_rows,
            "ok": self.ok,
            "targets": [
                {
                    "name": t.name,
                    "ok": t.ok,
                    "assets": [
                        {
                            "sourceUri": a.source_uri,
                            "targetUri": a.target_uri,
                            "inTarget": a.in_target,
                            "expected": a.expected,
                            "delivered": a.delivered,
                            "missing": a.missing,
                            "duplicated": {str(k): v for k, v in a.duplicated.items()},
                        }
                        for a in t.assets
                    ],
                }
                for t in self.targets
            ],
        }

    def table(self) -> str:
        lines = [
            f"sync {self.sync}: {self.source}, events from {self.window.since.isoformat()}"
            f" to {self.window.until.isoformat()}",
            f"{'target':<16} {'asset':<48} {'expected':>8} {'delivered':>9} {'missing':>7}"
            f" {'dup':>4}  note",
        ]
        for t in self.targets:
            for a in t.assets:
                note = "" if a.in_target else "asset not in target (parked or skipped)"
                if a.missing and a.in_target:
                    note = "missing ids " + _ids(a.missing)
                if a.duplicated:
                    note = (note + "; " if note else "") + "duplicated ids " + _ids(a.duplicated)
                lines.append(
                    f"{t.name:<16} {a.target_uri:<48} {a.expected:>8} {a.delivered:>9}"
                    f" {len(a.missing):>7} {len(a.duplicated):>4}  {note}"
                )
        if self.invalid_rows:
            lines.append(f"warning: {self.invalid_rows} source rows could not be read")
        lines.append("ok: every event delivered once" if self.ok else "NOT OK")
        return "\n".join(lines)


def _ids(ids: Iterable[int], shown: int = 10) -> str:
    values = sorted(ids)
    more = f" (+{len(values) - shown} more)" if len(values) > shown else ""
    return ", ".join(str(i) for i in values[:shown]) + more


def expected_events(events: Iterable[SourceEvent], spec: SyncSpec) -> dict[str, list[int]]:
    """Source URI -> ids the sync delivers, by the poller's rules (filter, no copies)."""
    event_filter = EventFilter(spec.assets)
    out: dict[str, list[int]] = {}
    for event in events:
        if MARKER_KEY in event.extra or event_filter.rejection(event) is not None:
            continue
        out.setdefault(event.uri, []).append(event.id)
    return {uri: sorted(ids) for uri, ids in sorted(out.items())}


def delivered_counts(events: Iterable[SourceEvent], *, origin: str, sync: str) -> Counter[int]:
    """Source event id -> copies among `events` (a target's) marked by this origin and sync."""
    counts: Counter[int] = Counter()
    for event in events:
        marker = Marker.from_extra(event.extra)
        if marker is not None and marker.origin == origin and marker.sync == sync:
            # A coalesced target event (delivery coalesce) delivers every id it lists.
            counts.update(marker.event_ids)
    return counts


def compare(
    target: Target,
    expected: dict[str, list[int]],
    delivered: dict[str, Counter[int] | None],
) -> TargetReport:
    """Per source asset: what arrived of `expected`, from `delivered` (target URI -> counts,
    None when the target has no such asset)."""
    report = TargetReport(name=target.name)
    for uri, ids in expected.items():
        mapped = target.map_uri(uri)
        counts = delivered.get(mapped)
        got = counts or Counter()
        report.assets.append(
            AssetReport(
                source_uri=uri,
                target_uri=mapped,
                expected=len(ids),
                delivered=sum(1 for i in ids if got.get(i)),
                missing=[i for i in ids if not got.get(i)],
                duplicated={i: got[i] for i in ids if got.get(i, 0) > 1},
                in_target=counts is not None,
            )
        )
    return report


Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def scan_source(
    client: AirflowClient, window: Window, *, progress: Progress = _stderr
) -> tuple[list[SourceEvent], int]:
    """Every source event in `window` (and the count of unreadable rows)."""
    found: dict[int, SourceEvent] = {}
    invalid = read = 0
    async for page in pages(client, window.since, until=window.until):
        invalid += len(page.invalid)
        for event in page.events:
            if event.timestamp in window:
                found[event.id] = event
        read += len(page.events)
        if read // PROGRESS_EVERY != (read - len(page.events)) // PROGRESS_EVERY:
            progress(f"verify: {read} source events read")
    return sorted(found.values(), key=lambda e: (e.timestamp, e.id)), invalid


async def scan_target(client: AirflowClient, uri: str, window: Window) -> list[SourceEvent] | None:
    """A target asset's events written since the window began; None if it has no such asset.

    A copy is written after its source event, so every copy of an event in the window was
    written at or after `since` (and may have been written after `until`).
    """
    if not await client.asset_exists(uri):
        return None
    return [
        e
        async for page in pages(client, window.since, asset_uri=uri)
        for e in page.events
        if e.timestamp >= window.since
    ]


async def verify(
    spec: SyncSpec,
    *,
    sync: str,
    window: Window,
    source: AirflowClient,
    targets: Mapping[str, AirflowClient],
    progress: Progress = _stderr,
) -> Report:
    try:
        events, invalid = await scan_source(source, window, progress=progress)
    except Exception as exc:
        raise Unreadable(f"source ({spec.source.identity}): {type(exc).__name__}: {exc}") from exc
    expected = expected_events(events, spec)
    reports = []
    for target in spec.targets:
        client = targets[target.name]
        delivered: dict[str, Counter[int] | None] = {}
        try:
            for mapped in sorted({target.map_uri(uri) for uri in expected}):
                rows = await scan_target(client, mapped, window)
                delivered[mapped] = (
                    None
                    if rows is None
                    else delivered_counts(rows, origin=spec.source.identity, sync=sync)
                )
        except Exception as exc:
            raise Unreadable(
                f"target {target.name} ({target.identity}): {type(exc).__name__}: {exc}"
            ) from exc
        reports.append(compare(target, expected, delivered))
    return Report(
        sync=sync,
        source=spec.source.identity,
        window=window,
        source_events=len(events),
        invalid_rows=invalid,
        targets=reports,
        events={e.id: e for e in events},
    )


@dataclass(frozen=True)
class Repair:
    """Events to write into one target asset: missing there, and the asset exists."""

    target: str
    target_uri: str
    event_ids: list[int]


def plan_repair(report: Report) -> list[Repair]:
    """What `--repair` writes: only missing events (never one the target has a copy of) of
    assets the target has (an absent asset's events are parked, and the worker writes them
    once it appears). Duplicates are reported, never deleted: no Airflow API can."""
    return [
        Repair(target=t.name, target_uri=a.target_uri, event_ids=list(a.missing))
        for t in report.targets
        for a in t.assets
        if a.in_target and a.missing
    ]


def describe_plan(plan: list[Repair]) -> str:
    total = sum(len(r.event_ids) for r in plan)
    lines = [f"repair: {total} events to write"]
    lines += [f"  {r.target}: {r.target_uri}: ids {_ids(r.event_ids)}" for r in plan]
    return "\n".join(lines)


async def repair(
    plan: list[Repair],
    report: Report,
    *,
    targets: Mapping[str, AirflowClient],
    progress: Progress = _stderr,
) -> int:
    """Write the planned events, with this sync's marker, one at a time; returns how many.

    A write whose outcome is unknown (a timeout after sending) is not retried here: the
    exception stops the repair, and running `verify` again shows whether it landed.
    """
    written = 0
    for item in plan:
        client = targets[item.target]
        for event_id in item.event_ids:
            envelope = Envelope(
                sync=report.sync, origin=report.source, event=report.events[event_id]
            )
            try:
                await client.post_event(
                    item.target_uri,
                    envelope.target_extra(),
                    partition_key=envelope.event.partition_key,
                )
            except Exception as exc:
                raise Unreadable(
                    f"target {item.target}: writing source event {event_id} after {written}"
                    f" written: {type(exc).__name__}: {exc}"
                ) from exc
            written += 1
            if written % PROGRESS_EVERY == 0:
                progress(f"repair: {written} events written")
    return written


def render(report: Report, *, as_json: bool) -> str:
    return json.dumps(report.to_json(), indent=2) if as_json else report.table()


@dataclass
class Outcome:
    """One `verify` run: the report and, when a repair was asked for, its plan, how many
    events were written and the report after them (no second report for a dry run or an
    empty plan)."""

    before: Report
    plan: list[Repair] | None = None
    written: int = 0
    after: Report | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """The last verdict: after the repair if one wrote anything, else before."""
        return (self.after or self.before).ok

    def render(self, *, as_json: bool) -> str:
        if self.plan is None:
            return render(self.before, as_json=as_json)
        if as_json:
            document = {
                "before": self.before.to_json(),
                "repair": {
                    "dryRun": self.dry_run,
                    "planned": sum(len(r.event_ids) for r in self.plan),
                    "written": self.written,
                },
                "after": self.after.to_json() if self.after is not None else None,
            }
            return json.dumps(document, indent=2)
        done = "dry run, nothing written" if self.dry_run else f"{self.written} written"
        parts = [self.before.table(), describe_plan(self.plan), f"repair: {done}"]
        if self.after is not None:
            parts.append(self.after.table())
        return "\n".join(parts)
