"""Forwarding: which targets get a source event that is itself a copy written by a sync.

Chains (A -> B -> C), hubs (spokes -> H -> spokes) and rings (A -> B -> C -> A) need a
copy to travel on, and an A <-> B pair must still never ping-pong. The marker's ``path``
(`api.events.Marker.hops`: the source instances the copy went through, origin first) makes
both possible without any shared state between syncs:

- a target already on the path (its origin among them) has the event: it gets nothing;
- every other target gets it, each decided on its own, so one sync with several targets
  forwards to the targets off the path only (the poller publishes the event once if any
  target needs it; each replayer drops it for its own target if that target is on the path);
- a copy is never forwarded past ``spec.maxHops`` syncs from its origin: the path check
  needs every instance to carry one identity in every sync (``instanceId``); if one
  instance is known under two URLs, the hop limit still ends the loop.

This module is pure (no I/O): the poller and the replayer call it and count what it says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from airflow_asset_sync.api.events import MARKER_KEY, Marker, SourceEvent

#: What the poller does with a source event: ``native`` (not a copy: published as always),
#: ``forwarded`` (a copy published for the targets off its path), ``path`` (every target,
#: or this source itself, is on its path: dropped), ``hop_limit`` (it would travel more than
#: ``spec.maxHops`` syncs: dropped).
Decision = Literal["native", "forwarded", "path", "hop_limit"]


def forwarded_path(marker: Marker, source: str) -> tuple[str, ...]:
    """The path of the copy this sync would write: the marker's, plus this sync's source."""
    return (*marker.hops, source)


def decide(
    marker: Marker | None, *, source: str, targets: Iterable[str], max_hops: int
) -> Decision:
    """Whether a source event goes on, for a sync from `source` to `targets` (identities).

    The hop count of a delivery is the length of its new path: 1 for a direct copy, 2 for
    A -> B -> C. A `source` already on the marker's path means the copy came back round
    (an instance known under two identities): dropped as ``path`` too.
    """
    if marker is None:
        return "native"
    if source in marker.hops:
        return "path"
    path = forwarded_path(marker, source)
    if len(path) > max_hops:
        return "hop_limit"
    if all(target in path for target in targets):
        return "path"
    return "forwarded"


def decide_event(
    event: SourceEvent, *, source: str, targets: Iterable[str], max_hops: int
) -> Decision:
    """`decide` for a source event as read (the poller, and a replay, ask this).

    A marker that does not parse (another tool's, or a newer shape) cannot tell its path:
    such an event is never forwarded, as any marked event was before chains.
    """
    marker = event.marker
    if marker is None and MARKER_KEY in event.extra:
        return "path"
    return decide(marker, source=source, targets=targets, max_hops=max_hops)


def on_path(marker: Marker, target: str) -> bool:
    """True if `target` already had the event this delivery carries (per-target check)."""
    return target in marker.hops
