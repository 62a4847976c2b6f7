"""A target's copies by marker, per asset, for the replay under way (`spec.replay`).

Why more than the replayer's usual check: after a restart the replayer looks at the newest
pages of an asset only, because what it may have written twice is recent. A replay re-sends
history, and the copy that makes a replayed event redundant may be weeks old, below any
number of newer events. So the first replayed delivery of an asset (per replay id) reads
every target event of that asset written since the replay's ``from`` (a copy is always
written after its source event; `CLOCK_MARGIN` covers a target clock running behind the
source's) and keeps their marker keys.

The keys the replayer writes or skips afterwards are added (live deliveries too), and live
deliveries of an asset with keys loaded are checked against them: the live stream and the
replay run in the same replayer, in order, so neither can write what the other wrote. The
keys are dropped at the next replay id, when the lease changes hands (another holder may
have written meanwhile), and after `IDLE_S` without a replayed delivery.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow_asset_sync.api.events import Envelope
from airflow_asset_sync.clients.airflow.base import AirflowClient, AssetNotFound, BadRequest
from airflow_asset_sync.worker.clock import Clock
from airflow_asset_sync.worker.scan import MarkerKey, marker_keys

log = logging.getLogger(__name__)

#: How far before ``from`` the target is read, for a target clock behind the source's.
CLOCK_MARGIN = timedelta(minutes=10)
#: Seconds without a replayed delivery after which the keys are dropped (memory).
IDLE_S = 600.0


class ReplayMarkers:
    """Marker keys of one target's copies, per target asset, for one replay id."""

    def __init__(self, client: AirflowClient, *, clock: Clock, target: str) -> None:
        self._client = client
        self._clock = clock
        self._target = target
        self._replay: str | None = None
        self._keys: dict[str, set[MarkerKey]] = {}
        self._used = 0.0

    async def holds(self, envelope: Envelope, uri: str) -> bool:
        """Whether the target has a copy of this delivery, as far as a replay must know.

        A replayed delivery loads the asset's keys first (one page walk per asset and replay);
        a live one is only checked when they are loaded. Raises what the listing raises
        (the caller retries like a failed write), except for a 404 (the asset is unknown:
        no copies) and a 400 (this target cannot list by asset: logged, written unchecked,
        as the restart check does).
        """
        tag = envelope.replay
        now = self._clock.monotonic()
        if tag is None:
            if self._keys and now - self._used > IDLE_S:
                self.clear()
            keys = self._keys.get(uri)
            return keys is not None and envelope.marker().key in keys
        if tag.id != self._replay:
            self.clear()
            self._replay = tag.id
        self._used = now
        if uri not in self._keys:
            self._keys[uri] = await self._load(uri, tag.from_ - CLOCK_MARGIN)
        return envelope.marker().key in self._keys[uri]

    def add(self, uri: str, key: MarkerKey) -> None:
        """A copy of `key` is now in the target (written, or found there)."""
        keys = self._keys.get(uri)
        if keys is not None:
            keys.add(key)

    def clear(self) -> None:
        self._keys.clear()
        self._replay = None

    async def _load(self, uri: str, since: datetime) -> set[MarkerKey]:
        try:
            keys = await marker_keys(self._client, uri, since)
        except AssetNotFound:
            return set()
        except BadRequest as exc:
            log.warning(
                "cannot list the target's events of an asset; replayed events are written "
                "without checking for an earlier copy",
                extra={"target": self._target, "asset_uri": uri, "error": str(exc)},
            )
            return set()
        log.info(
            "target copies listed for a replay",
            extra={"target": self._target, "asset_uri": uri, "copies": len(keys)},
        )
        return keys
