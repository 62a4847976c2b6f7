"""The checkpoint arithmetic: where a read starts, what it counts as new, where it ends.

The checkpoint (`api.status.Checkpoint`) is a timestamp plus the ids already handled in the
*overlap window* behind it. An event counts as handled when it is older than
``checkpoint.timestamp - overlap`` (or than ``settled_before``, below), or its id is in
``seen_ids``. Every read re-reads the window and drops the ids it has seen.

Why an overlap window: a row's timestamp is taken when its transaction starts, but the row
becomes visible when the transaction commits. A slow transaction can therefore commit a row
with a timestamp *earlier* than rows we have already read. Re-reading a few seconds behind the
checkpoint (default 5 s) catches such late rows; the ids stop the others being sent twice.

Only the recent part of the window can still change: a row that is not visible yet carries a
timestamp within `overlap` of the moment it is read. So once a read has seen the source at
server time D (its HTTP ``Date``), everything older than ``D - overlap`` was complete then,
and the checkpoint records that as ``settled_before``; later reads start there instead of at
``timestamp - overlap``. Without it, a source quiet after a burst cost one page per 100
window events on every poll for good (3.2 requests/s measured), and a catch-up re-read half
a page per 100 new events. `SKEW` covers clocks of the hosts that stamp rows (scheduler,
workers) running up to a second behind the API server's. A ``Date`` that lags the true time
(uvicorn, serving Airflow 3, refreshes its cached one once a second: seen 1.7 s behind) only
makes the bound more conservative; one that runs ahead would not, hence the margin.

The strategies (`v1`, `v2`) call `lower_bound` and `select`; the poller calls
`next_checkpoint` after each publish, and `resolve_start` once for ``startFrom``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.spec import StartFrom
from airflow_asset_sync.api.status import MAX_SEEN_IDS, Checkpoint
from airflow_asset_sync.worker.cursor.protocol import Batch, Cursor

#: How far behind the checkpoint each read looks again for rows that committed late.
DEFAULT_OVERLAP = timedelta(seconds=5)

#: Margin for the clocks that stamp rows running behind the API server's ``Date``.
SKEW = timedelta(seconds=1)


def lower_bound(checkpoint: Checkpoint, overlap: timedelta) -> datetime | None:
    """Where a read starts: the overlap window behind the checkpoint, minus its settled part."""
    if checkpoint.timestamp is None:
        return None
    lower = checkpoint.timestamp - overlap
    settled = checkpoint.settled_before
    if settled is not None:
        lower = max(lower, min(settled, checkpoint.timestamp))
    return lower


def select(
    collected: Iterable[SourceEvent], checkpoint: Checkpoint, lower: datetime | None
) -> tuple[list[SourceEvent], dict[int, datetime]]:
    """Split what a read collected into new events and re-read ones.

    Duplicates within a read (offset paging while rows are inserted) collapse by id.

    Saturation: `seen_ids` is capped at MAX_SEEN_IDS. When more events than that fall in one
    overlap window, `next_checkpoint` keeps the newest ones by ``(timestamp, id)``; the
    dropped ones are older than every kept one. Without care they would look new on every
    read and be published again forever. So when the set is full, unseen events that sort
    before the oldest seen event met in this read are treated as handled. The cost, stated:
    at more than MAX_SEEN_IDS events per window, a late row older than that point is missed.
    """
    by_id: dict[int, SourceEvent] = {}
    for event in collected:
        if lower is not None and event.timestamp < lower:
            continue
        by_id.setdefault(event.id, event)
    seen = set(checkpoint.seen_ids)
    reread = {i: e.timestamp for i, e in by_id.items() if i in seen}
    floor: tuple[datetime, int] | None = None
    if len(seen) >= MAX_SEEN_IDS and reread:
        floor = min(by_id[i].sort_key for i in reread)
    new: list[SourceEvent] = []
    for event in sorted(by_id.values(), key=lambda e: e.sort_key):
        if event.id in seen:
            continue
        if floor is not None and event.sort_key < floor:
            reread[event.id] = event.timestamp
            continue
        new.append(event)
    return new, reread


def next_checkpoint(
    previous: Checkpoint,
    *,
    batch: Batch,
    handled: Sequence[SourceEvent],
    overlap: timedelta = DEFAULT_OVERLAP,
) -> Checkpoint:
    """The checkpoint after `handled` (a prefix of ``batch.events``) went out.

    "Handled" means published, or deliberately not published (filtered, a synced event, known
    to be in the transport already): the checkpoint must pass those too, or they would be read
    again forever. It never passes anything else: the timestamp is the newest handled one,
    and an unhandled event at that same timestamp is not in `seen_ids`, so it is read again.

    `seen_ids` = every handled or re-read id whose timestamp lies within `overlap` behind the
    new timestamp, capped at MAX_SEEN_IDS keeping the newest (see `select` for what the cap
    costs).
    """
    if not handled:
        if previous.timestamp is None:
            return previous
        settled = _settled(previous, batch, handled, previous.timestamp, overlap)
        if settled == previous.settled_before:
            return previous
        return previous.model_copy(update={"settled_before": settled})
    newest = max(e.timestamp for e in handled)
    timestamp = newest if previous.timestamp is None else max(previous.timestamp, newest)
    known: dict[int, datetime] = dict(batch.reread)
    known.update((e.id, e.timestamp) for e in handled)
    if previous.timestamp is not None and timestamp == previous.timestamp:
        # The window did not move: ids seen before stay seen even if this read did not reach
        # them (they are ranked oldest for the cap, their timestamps being unknown here).
        for event_id in previous.seen_ids:
            known.setdefault(event_id, timestamp - overlap)
    keep = sorted((ts, i) for i, ts in known.items() if ts >= timestamp - overlap)
    keep = keep[-MAX_SEEN_IDS:]
    return Checkpoint(
        timestamp=timestamp,
        seen_ids=sorted(i for _, i in keep),
        initialized=previous.initialized,
        settled_before=_settled(previous, batch, handled, timestamp, overlap),
    )


def _settled(
    previous: Checkpoint,
    batch: Batch,
    handled: Sequence[SourceEvent],
    timestamp: datetime,
    overlap: timedelta,
) -> datetime | None:
    """How far back the next read must look (``settled_before``).

    Only handled events may be skipped, so the bound stays at or before the new checkpoint
    and the first event of the batch not handled yet (a late row below the checkpoint can be
    in that tail). A read that met invalid rows does not move it: they are being retried and
    must be read again. It never moves back, because `seen_ids` keeps only ids the next read
    can meet: a lower bound would re-read ids dropped from it and publish them twice.
    """
    settled = previous.settled_before
    if batch.server_time is None or batch.invalid:
        return settled
    candidate = min(timestamp, batch.server_time - overlap - SKEW)
    if len(batch.events) > len(handled):  # the first event not handled (events ascend)
        candidate = min(candidate, batch.events[len(handled)].timestamp)
    return candidate if settled is None else max(settled, candidate)


async def resolve_start(
    cursor: Cursor, start: StartFrom, *, overlap: timedelta = DEFAULT_OVERLAP
) -> Checkpoint:
    """The first checkpoint for `startFrom`; the caller saves it before publishing anything.

    - ``earliest``: an empty checkpoint, everything is new.
    - ``latest``: everything that exists now is handled: the checkpoint sits on the newest
      event with the ids of its window as seen, so the next read delivers only what comes
      after (and late rows committed after this moment).
    - a time T: events at or after T are new. The checkpoint sits at T with the ids of the
      window *before* T marked seen, since the overlap re-read would otherwise deliver them.

    Saving the result (``initialized=True``) before the first publish is what makes a restart
    resume from the checkpoint instead of resolving ``latest`` again and skipping the events
    that arrived in between.
    """
    if start == "earliest":
        return Checkpoint(initialized=True)
    if isinstance(start, datetime):
        anchor, inclusive = start, False
    else:
        newest = await cursor.newest()
        if newest is None:
            return Checkpoint(initialized=True)
        anchor, inclusive = newest.timestamp, True
    checkpoint = Checkpoint(timestamp=anchor)
    while True:
        batch = await cursor.read(checkpoint)
        handled = [e for e in batch.events if inclusive or e.timestamp < anchor]
        checkpoint = next_checkpoint(checkpoint, batch=batch, handled=handled, overlap=overlap)
        if not batch.more or len(handled) < len(batch.events):
            break
    return checkpoint.model_copy(update={"initialized": True})
