"""The poller never publishes more per checkpoint than a replayer checks after a restart."""

from __future__ import annotations

import pytest

from airflow_asset_sync.worker.pipeline import WorkerOptions
from airflow_asset_sync.worker.poller import MAX_PUBLISH, PollSettings
from airflow_asset_sync.worker.redelivery import PublishBoundTooLarge
from airflow_asset_sync.worker.replayer import ReplayerOptions

from .test_pipeline import A, B, spec


def test_a_publish_larger_than_the_replayers_commit_batch_is_refused_at_start() -> None:
    with pytest.raises(PublishBoundTooLarge) as refused:
        WorkerOptions(max_publish=101, replayer=ReplayerOptions(commit_batch=100))
    assert (refused.value.max_publish, refused.value.commit_batch) == (101, 100)
    with pytest.raises(PublishBoundTooLarge):
        WorkerOptions(max_publish=MAX_PUBLISH, replayer=ReplayerOptions(commit_batch=10))


def test_the_publish_bound_follows_the_commit_batch_unless_set_smaller() -> None:
    assert WorkerOptions().publish_bound == ReplayerOptions().commit_batch == MAX_PUBLISH
    assert WorkerOptions(replayer=ReplayerOptions(commit_batch=7)).publish_bound == 7
    assert WorkerOptions(max_publish=3).publish_bound == 3


def test_poll_settings_come_from_the_spec() -> None:
    sync_spec = spec(A, {"name": "b", "url": B})
    settings = PollSettings.from_spec(sync_spec, sync="ns/s", max_publish=5)
    assert settings.origin == sync_spec.source.identity
    assert settings.assets == sync_spec.assets
    assert settings.start_from == sync_spec.start
    assert settings.poll_interval_s == sync_spec.poll_interval_seconds
    assert settings.max_publish == 5
    with pytest.raises(ValueError, match="max_publish"):
        PollSettings.from_spec(sync_spec, sync="ns/s", max_publish=0)
