"""The copies a target holds of an asset's events, by marker, and when a delivery is one of them.

The rule (exactly once with chains and hubs):

- The identity of an event is its ORIGIN event: the instance where it was born and its id
  there (`Marker.origin_key`). A forwarded copy (A -> B -> C) carries the origin's identity,
  not that of the intermediate copy in B (`Envelope.marker`), so whatever path brings an
  event to C, C can tell it is the same event.
- A delivery is already in the target if the target holds a copy with the same `Marker.key`
  (origin event and the sync that writes it: the replayer's own earlier write, as before
  chains), or a copy of the same origin event where either of the two is forwarded: an
  event that reaches C by two paths (A -> C and A -> B -> C, or through two hubs) lands once.
- Two direct copies by two syncs between the same two instances stay two deliveries (both
  unforwarded: only `key` decides), as before chains.

When the target is asked (the listing is the asset's newest events, `dedup_pages` pages):
every forwarded delivery is checked before it is written (one listing per asset per batch,
`replayer`), since another path may have brought the event at any time; a direct delivery
only in the windows it always was (after a restart, an ambiguous write, a lease change). So
a forwarded copy that comes second is never written; a direct copy is written unless a
forwarded one landed first and no window covers the direct write (its sync lagging behind
a longer path). Two forwarded copies written at the same moment by two workers can both
pass the check (no lock spans two syncs): at least once still holds, exactly once does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from airflow_asset_sync.api.events import Marker

#: (origin, source event id, sync): `Marker.key`.
Key = tuple[str, int, str]
OriginKey = tuple[str, int]
#: Why a delivery is already in the target: its own key, or the same event by another path.
Held = Literal["own", "other_path"]


@dataclass
class TargetCopies:
    """Marker keys of a target's copies of one asset, with their origin events."""

    keys: set[Key] = field(default_factory=set)
    #: Origin events of every copy, and of the forwarded copies only.
    origins: set[OriginKey] = field(default_factory=set)
    forwarded: set[OriginKey] = field(default_factory=set)

    def add(self, marker: Marker) -> None:
        """Record one target event's marker (every id of a coalesced one)."""
        self.keys.update(marker.keys)
        origins = {(origin, event_id) for origin, event_id, _ in marker.keys}
        self.origins |= origins
        if marker.forwarded:
            self.forwarded |= origins

    def holds(self, marker: Marker) -> Held | None:
        """Whether the delivery that writes `marker` is already in the target (module doc)."""
        if marker.key in self.keys:
            return "own"
        origin = marker.origin_key
        if (marker.forwarded and origin in self.origins) or origin in self.forwarded:
            return "other_path"
        return None

    def __contains__(self, key: object) -> bool:
        """Membership by `Marker.key` (what the parked-event check and tests look up)."""
        return key in self.keys
