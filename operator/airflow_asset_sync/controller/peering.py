"""Whether this replica is the active one under kopf peering, for work kopf does not drive.

kopf pauses its own handlers on a standby replica, but `handlers.Resyncer` runs in a thread
of its own, so it asks here before each round. The rule is kopf's: a replica stands by while
the peering object lists another live peer (last seen within its lifetime) of a higher
priority. Priorities are random and distinct (see `entrypoint`), so an equal priority is this
replica's own entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class PeeringReader(Protocol):
    """What reads kopf's peering objects (`clients.kube.KubeClient.get_peering`)."""

    def get_peering(self, *, namespace: str | None, name: str) -> Mapping[str, Any] | None: ...


def outranked(peers: Mapping[str, Any], *, priority: int, now: datetime) -> list[str]:
    """Ids of live peers with a higher priority than `priority` (a peering object's status)."""
    found = []
    for peer_id, info in peers.items():
        if not isinstance(info, Mapping):
            continue
        try:
            other = int(info.get("priority", 0))
            lifetime = timedelta(seconds=int(info.get("lifetime", 60)))
            last = datetime.fromisoformat(str(info["lastseen"]))
        except (KeyError, TypeError, ValueError):
            continue
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if other > priority and last + lifetime > now:
            found.append(str(peer_id))
    return found


class PeeringGate:
    """`active()` is True unless a peering object shows a live peer outranking this one.

    `read(namespace)` returns the peering object (None: absent); `namespace` is None for the
    ClusterKopfPeering. A failed read counts as inactive for that round: better one resync
    late than two replicas writing.
    """

    def __init__(
        self,
        *,
        read: Callable[[str | None], Mapping[str, Any] | None],
        namespaces: Iterable[str | None],
        priority: int,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._read = read
        self._namespaces = list(namespaces)
        self._priority = priority
        self._now = now

    def __call__(self) -> bool:
        for namespace in self._namespaces:
            try:
                body = self._read(namespace)
            except Exception as exc:
                log.info("peering object unreadable, skipping this resync: %s", exc)
                return False
            peers = (body or {}).get("status") or {}
            if outranked(peers, priority=self._priority, now=self._now()):
                return False
        return True
