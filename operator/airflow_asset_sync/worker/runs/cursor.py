"""Reading "the completions that are new since the checkpoint" (`spec.dagRuns`).

The same cursor arithmetic as the asset events (`worker.cursor.checkpoint`), with a
completion's ``end_date`` as its time and its derived id (`ids.completion_id`) as its id:
each read starts ``overlap`` behind the checkpoint (a run's end is stamped before its
transaction commits, exactly as an event's timestamp is), drops the ids already seen and
returns the rest ascending by ``(end_date, id)``. Unlike the events cursor this one never
marks part of the window settled (its batches carry no ``server_time``): every read re-reads
the whole window, which costs a page of the runs that ended in the last few seconds and
keeps the one 2.x weakness below harmless.

Both listings are read from the lower bound on, page by page:

- DAG runs ordered by ``end_date`` (3.x with the id as tie-breaker; 2.x without, so two runs
  ending in the same microsecond may swap across a page boundary; the next read, which
  re-reads the window, picks up one that was missed). A read stops after `max_batch` rows
  and sets ``more``.
- Task instances, when a selector names a task: ordered in 3.x as the runs are; 2.x cannot
  order this listing, so every page of the window is read and sorted here (at most
  `MAX_UNORDERED_PAGES`, beyond which the read fails rather than guess).

When one listing stopped early, the other's rows after its last row are left for the next
read (``cut``), so the checkpoint never passes a completion that was not read. A task row
has no ``conf``: it is looked up from its run once (cached).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.spec import DagRunSelector
from airflow_asset_sync.api.status import Checkpoint
from airflow_asset_sync.clients.airflow.base import (
    BadResponse,
    Completion,
    CompletionQuery,
    Listing,
    RunSource,
)
from airflow_asset_sync.worker.cursor.checkpoint import DEFAULT_OVERLAP, lower_bound, select
from airflow_asset_sync.worker.cursor.protocol import Batch
from airflow_asset_sync.worker.runs.ids import completion_event, matches

log = logging.getLogger(__name__)

#: Completions per read before it stops and sets ``more``.
DEFAULT_MAX_BATCH = 1000
#: Pages of unordered 2.x task instances one read may take (10,000 rows at 100 a page).
MAX_UNORDERED_PAGES = 100
#: Runs whose ``conf`` is remembered for their task rows.
_CONF_MEMORY = 1000


class CompletionCursor:
    """`worker.cursor.Cursor` over finished DAG runs and task instances of the source."""

    def __init__(
        self,
        client: RunSource,
        selectors: Sequence[DagRunSelector],
        *,
        instance: str,
        overlap: timedelta = DEFAULT_OVERLAP,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._client = client
        self._run_selectors = [s for s in selectors if s.task_id is None]
        self._task_selectors = [s for s in selectors if s.task_id is not None]
        self._instance = instance
        self._overlap = overlap
        self._max_batch = max_batch
        self._confs: OrderedDict[tuple[str, str], dict[str, Any] | None] = OrderedDict()
        #: Rows that could not become events (counted by the poller; reasons logged here).
        self.invalid = 0

    @staticmethod
    def _states(selectors: Sequence[DagRunSelector]) -> tuple[str, ...]:
        return tuple(sorted({state for s in selectors for state in s.states}))

    async def read(self, checkpoint: Checkpoint) -> Batch:
        lower = lower_bound(checkpoint, self._overlap)
        rows: list[Completion] = []
        cuts: list[datetime] = []
        listings: list[tuple[Listing, list[DagRunSelector]]] = [
            ("dag_runs", self._run_selectors),
            ("task_instances", self._task_selectors),
        ]
        for listing, selectors in listings:
            if not selectors:
                continue
            found, cut = await self._walk(listing, self._states(selectors), lower)
            rows.extend(found)
            if cut is not None:
                cuts.append(cut)
        cut = min(cuts) if cuts else None
        if cut is not None:
            rows = [r for r in rows if r.end_date <= cut]
        events = await self._events(rows)
        new, reread = select(events, checkpoint, lower)
        return Batch(events=new, reread=reread, more=cut is not None)

    async def _walk(
        self, listing: Listing, states: tuple[str, ...], lower: datetime | None
    ) -> tuple[list[Completion], datetime | None]:
        """Every row of `listing` from `lower` on, or the first `max_batch` and the cut."""
        limit = self._client.page_limit
        ordered = listing == "dag_runs" or self._client.api_version == "v2"
        rows: list[Completion] = []
        offset = pages = 0
        while True:
            query = CompletionQuery(states=states, end_date_gte=lower, limit=limit, offset=offset)
            if listing == "dag_runs":
                page = await self._client.list_dag_runs(query)
            else:
                page = await self._client.list_task_instances(query)
            pages += 1
            for problem in page.invalid:
                self.invalid += 1
                log.error("skipping a completion the source returned invalid: %s", problem)
            rows.extend(page.rows)
            count = len(page.rows) + len(page.invalid)
            offset += count
            if count < limit or (page.total_entries is not None and offset >= page.total_entries):
                break
            if ordered and len(rows) >= self._max_batch:
                return rows, max(r.end_date for r in rows)
            if not ordered and pages >= MAX_UNORDERED_PAGES:
                raise BadResponse(
                    f"more than {MAX_UNORDERED_PAGES * limit} task instances ended within the"
                    " re-read window; Airflow 2.x cannot order them, so they cannot be read"
                    " in parts"
                )
        return rows, None

    async def _events(self, rows: Sequence[Completion]) -> list[SourceEvent]:
        events: list[SourceEvent] = []
        for row in rows:
            selectors = self._task_selectors if row.task_id is not None else self._run_selectors
            chosen = [s for s in selectors if matches(s, row)]
            if not chosen:
                continue
            conf = row.conf if row.task_id is None else await self._conf(row)
            for selector in chosen:
                try:
                    events.append(
                        completion_event(row, selector, instance=self._instance, conf=conf)
                    )
                except ValueError as exc:
                    self.invalid += 1
                    log.error(
                        "skipping a completion that cannot be an event",
                        extra={"dag_id": row.dag_id, "run_id": row.run_id, "error": str(exc)},
                    )
        return events

    async def _conf(self, row: Completion) -> dict[str, Any] | None:
        key = (row.dag_id, row.run_id)
        if key in self._confs:
            self._confs.move_to_end(key)
            return self._confs[key]
        conf = await self._client.dag_run_conf(row.dag_id, row.run_id)
        self._confs[key] = conf
        while len(self._confs) > _CONF_MEMORY:
            self._confs.popitem(last=False)
        return conf

    async def newest(self) -> SourceEvent | None:
        """The newest completion that exists now (``startFrom: latest`` anchors on it).

        Newest by ``end_date`` across both listings; for 2.x task instances, which cannot be
        ordered, among those that ended at or after the newest finished run.
        """
        candidates: list[Completion] = []
        if self._run_selectors or self._task_selectors:
            query = CompletionQuery(states=("success", "failed"), limit=1, descending=True)
            candidates.extend((await self._client.list_dag_runs(query)).rows)
        if self._task_selectors:
            states = ("success", "failed")
            if self._client.api_version == "v2":
                query = CompletionQuery(states=states, limit=1, descending=True)
                candidates.extend((await self._client.list_task_instances(query)).rows)
            else:
                lower = max((c.end_date for c in candidates), default=None)
                found, _ = await self._walk("task_instances", states, lower)
                candidates.extend(found)
        if not candidates:
            return None
        newest = max(candidates, key=lambda c: c.end_date)
        return SourceEvent(id=-1, uri="completion:newest", timestamp=newest.end_date)

    async def oldest(self) -> SourceEvent | None:
        """Not used: purges of run history are not detected (see docs/dag-runs.md)."""
        return None
