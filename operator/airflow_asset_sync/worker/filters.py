"""Which source events are synced: `spec.assets` include/exclude patterns and `sourceDagIds`.

Pure functions over `SourceEvent`, so the rules are tested without any I/O.

Rules (they mirror the `AssetFilter` docstring):

- A pattern is a glob (`fnmatch`, case-sensitive) or a regex (full match). Case-sensitive
  because URIs are: `s3://Bucket/x` and `s3://bucket/x` are different assets to Airflow.
  `fnmatchcase` is used rather than `fnmatch` so the result does not depend on the OS.
- A pattern matches an event when it matches the asset URI or the asset name. Airflow 3 assets
  have both, and users think in either; Airflow 2 datasets only have a URI.
- An event passes when `include` is empty or some include pattern matches, and no exclude
  pattern matches (exclude wins).
- `sourceDagIds`, when set, keeps only events produced by a task of a matching DAG (globs).
  Events created through the REST API or by an AssetWatcher have no source DAG and are
  therefore dropped by a non-empty `sourceDagIds`: the user asked for events of those DAGs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.spec import AssetFilter, Pattern


@dataclass(frozen=True)
class CompiledPattern:
    """A `Pattern` ready to match; `text` is kept for log lines."""

    text: str
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, pattern: Pattern) -> CompiledPattern:
        if pattern.regex is not None:
            return cls(text=f"regex:{pattern.regex}", regex=re.compile(pattern.regex))
        assert pattern.glob is not None  # the model validator guarantees one of the two
        return cls(text=pattern.glob, regex=None)

    def matches(self, value: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(value) is not None
        return fnmatchcase(value, self.text)


def _subjects(event: SourceEvent) -> tuple[str, ...]:
    if event.name and event.name != event.uri:
        return (event.uri, event.name)
    return (event.uri,)


class EventFilter:
    """Decides, per event, whether it is synced."""

    def __init__(self, spec: AssetFilter) -> None:
        self._include = [CompiledPattern.compile(p) for p in spec.include]
        self._exclude = [CompiledPattern.compile(p) for p in spec.exclude]
        self._dag_ids = list(spec.source_dag_ids)

    def rejection(self, event: SourceEvent) -> str | None:
        """Why `event` is filtered out, or None when it passes (the reason goes to debug logs)."""
        subjects = _subjects(event)
        if self._include and not any(p.matches(s) for p in self._include for s in subjects):
            return "matches no include pattern"
        for pattern in self._exclude:
            if any(pattern.matches(s) for s in subjects):
                return f"excluded by {pattern.text!r}"
        if self._dag_ids:
            dag_id = event.source_dag_id
            if dag_id is None:
                return "has no source DAG and sourceDagIds is set"
            if not any(fnmatchcase(dag_id, glob) for glob in self._dag_ids):
                return f"source DAG {dag_id!r} matches no sourceDagIds pattern"
        return None

    def matches(self, event: SourceEvent) -> bool:
        return self.rejection(event) is None
