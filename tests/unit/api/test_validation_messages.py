"""One wording of an invalid spec (`api.validation`): the worker's `run`/`check` and the
operator's Stalled condition name the same fields with the same messages."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from airflow_asset_sync.api.spec import SyncSpec
from airflow_asset_sync.api.validation import field_path, validation_problems
from airflow_asset_sync.controller.reconcile import StepFailed, validate_spec
from airflow_asset_sync.worker.app import BadManifest, parse_sync

SPEC: dict[str, Any] = {
    "source": {"url": "http://a:8080"},
    "targets": [{"name": "b", "url": "http://b:8080", "rewrite": [{"match": "(", "replace": ""}]}],
    "pollInterval": "1d",
}


def _problems(spec: dict[str, Any], prefix: str = "spec") -> list[str]:
    with pytest.raises(pydantic.ValidationError) as info:
        SyncSpec.model_validate(spec)
    return validation_problems(info.value, prefix=prefix)


@pytest.mark.parametrize(
    ("loc", "prefix", "path"),
    [
        (("targets", 0, "auth"), "spec", "spec.targets[0].auth"),
        (("apiVersion",), "", "apiVersion"),
        ((), "spec", "spec"),
        ((), "", ""),
        (("rewrite", 1, 2), "", "rewrite[1][2]"),
    ],
)
def test_field_path(loc: tuple[int | str, ...], prefix: str, path: str) -> None:
    assert field_path(loc, prefix) == path


def test_one_line_per_problem_naming_the_field_without_pydantic_prefix() -> None:
    problems = _problems(SPEC)
    assert len(problems) == 2
    paths = {problem.split(": ", 1)[0] for problem in problems}
    assert paths == {"spec.targets[0].rewrite[0].match", "spec.pollInterval"}
    assert not any("Value error" in problem for problem in problems)


def test_the_worker_and_the_operator_say_the_same() -> None:
    problems = _problems(SPEC)
    with pytest.raises(StepFailed) as stalled:
        validate_spec({"spec": SPEC})
    assert stalled.value.problem.message == f"Invalid spec: {'; '.join(problems)}"
    body = {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "metadata": {"name": "a-to-b"},
        "spec": SPEC,
    }
    with pytest.raises(BadManifest) as bad:
        parse_sync(body)
    assert str(bad.value).splitlines() == problems
