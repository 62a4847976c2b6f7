"""The bound on what a crash can make the worker write twice, shared by poller and replayers.

After a crash the poller reads again, and publishes again, everything it published but had
not checkpointed. With Kafka, ``published_keys`` filters those; the in-process channel keeps
nothing, so they reach the replayers a second time. A replayer checks only its first
`commit_batch` deliveries after a start against the target (its *suspect* window, see
`replayer`) and writes the rest without asking. So the poller (and a replay) publishes at
most `commit_batch` events before each checkpoint. When one publish held a whole poll batch
(up to 1000 events, 10,000 for 2.x), a SIGKILL that cut it short had it written again from
its 101st event on: the reliability suite saw 106 of 2,000 events duplicated, some ten
times over, as each restart re-read the same unfinished batch.

`check_publish_bound` holds the rule where the two numbers meet (`pipeline.WorkerOptions`
and the wiring of each replayer), so breaking it is an error at start, not duplicates later.
"""

from __future__ import annotations

#: The replayers' default ``commit_batch``, and so the poller's default publish size.
COMMIT_BATCH = 100


class PublishBoundTooLarge(ValueError):
    """A publish may hold more events than a replayer checks after a restart."""

    def __init__(self, *, max_publish: int, commit_batch: int) -> None:
        super().__init__(
            f"max_publish {max_publish} is larger than the replayers' commit_batch"
            f" {commit_batch}: after a crash, events re-published beyond a replayer's"
            " suspect window would be written to the target twice"
        )
        self.max_publish = max_publish
        self.commit_batch = commit_batch


def check_publish_bound(*, max_publish: int, commit_batch: int) -> None:
    """Raise `PublishBoundTooLarge` unless ``max_publish <= commit_batch``."""
    if max_publish > commit_batch:
        raise PublishBoundTooLarge(max_publish=max_publish, commit_batch=commit_batch)
