"""`spec.assets` matching: globs, regexes, URI and name, exclude wins, sourceDagIds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_asset_sync.api.events import SourceEvent
from airflow_asset_sync.api.spec import AssetFilter
from airflow_asset_sync.worker.filters import EventFilter


def event(uri: str, *, name: str | None = None, dag: str | None = "etl") -> SourceEvent:
    return SourceEvent(
        id=1, uri=uri, name=name, timestamp=datetime(2026, 1, 1, tzinfo=UTC), source_dag_id=dag
    )


def make(**spec: Any) -> EventFilter:
    return EventFilter(AssetFilter.model_validate(spec))


def test_empty_filter_passes_everything() -> None:
    f = make()
    assert f.matches(event("s3://a/b"))
    assert f.matches(event("s3://a/b", dag=None))


def test_include_glob_matches_uri() -> None:
    f = make(include=[{"glob": "s3://sales/*"}])
    assert f.matches(event("s3://sales/orders"))
    assert not f.matches(event("s3://hr/people"))


def test_include_matches_asset_name_too() -> None:
    f = make(include=[{"glob": "orders*"}])
    assert f.matches(event("s3://bucket/x", name="orders_daily"))
    assert not f.matches(event("s3://bucket/x", name="people"))
    assert not f.matches(event("s3://bucket/x"))


def test_regex_is_a_full_match() -> None:
    f = make(include=[{"regex": r"s3://sales/\w+"}])
    assert f.matches(event("s3://sales/orders"))
    # A search would find "s3://sales/orders" inside this one; a full match must not.
    assert not f.matches(event("s3://sales/orders/2024"))
    assert not f.matches(event("x-s3://sales/orders"))


def test_glob_is_case_sensitive() -> None:
    f = make(include=[{"glob": "s3://sales/*"}])
    assert not f.matches(event("s3://SALES/orders"))


def test_exclude_wins_over_include() -> None:
    f = make(include=[{"glob": "s3://sales/*"}], exclude=[{"glob": "*tmp*"}])
    assert f.matches(event("s3://sales/orders"))
    assert not f.matches(event("s3://sales/tmp_orders"))
    rejection = f.rejection(event("s3://sales/tmp_orders"))
    assert rejection is not None
    assert "*tmp*" in rejection


def test_exclude_matches_name() -> None:
    f = make(exclude=[{"regex": "scratch_.*"}])
    assert not f.matches(event("s3://b/1", name="scratch_1"))
    assert f.matches(event("s3://b/1", name="final"))


def test_any_of_several_includes() -> None:
    f = make(include=[{"glob": "s3://a/*"}, {"regex": "gs://b/.*"}])
    assert f.matches(event("s3://a/1"))
    assert f.matches(event("gs://b/2"))
    assert not f.matches(event("file:///c"))


@pytest.mark.parametrize(
    ("dag", "passes"),
    [("sales_etl", True), ("sales_report", True), ("hr_etl", False), (None, False)],
)
def test_source_dag_ids(dag: str | None, passes: bool) -> None:
    f = make(source_dag_ids=["sales_*"])
    assert f.matches(event("s3://x", dag=dag)) is passes


def test_source_dag_ids_combine_with_patterns() -> None:
    f = make(include=[{"glob": "s3://sales/*"}], source_dag_ids=["etl"])
    assert f.matches(event("s3://sales/o", dag="etl"))
    assert not f.matches(event("s3://sales/o", dag="other"))
    assert not f.matches(event("s3://hr/o", dag="etl"))
