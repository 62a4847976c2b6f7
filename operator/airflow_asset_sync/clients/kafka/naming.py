"""Names this project gives things in Kafka: the default topic, group ids, member ids.

Pure functions of the sync's reference, so the operator, the worker and tests agree on them.
"""

from __future__ import annotations

import hashlib

from airflow_asset_sync.api.spec import ObjectRef

#: Prefix of the default topic name and of every consumer group id.
NAME_PREFIX = "airflow-asset-sync"
#: Kafka's limit on topic names.
MAX_TOPIC_LENGTH = 249


def default_topic(sync: ObjectRef) -> str:
    """``airflow-asset-sync.<namespace>.<name>``: one topic per sync, readable in Kafka tools.

    Kubernetes names fit Kafka's topic alphabet; the rare name too long for Kafka's 249
    characters is cut and suffixed with a digest, so distinct syncs never share a topic.
    """
    topic = f"{NAME_PREFIX}.{sync.namespace}.{sync.name}"
    if len(topic) <= MAX_TOPIC_LENGTH:
        return topic
    digest = hashlib.sha256(topic.encode()).hexdigest()[:12]
    return f"{topic[: MAX_TOPIC_LENGTH - 13]}-{digest}"


def static_member_id(topic: str) -> str:
    """The static member id of the one consumer in a group (`KafkaSettings.static_membership`).

    Static members do not leave their group on close: the next start with the same id takes
    the partitions back without a rebalance. The topic is part of the id: a member that
    rejoined under its old id after `spec.kafka.topic` changed would be handed the old
    topic's partitions (aiokafka fails on that); under a new id it waits once, at most the
    session timeout, for the old member to expire.
    """
    digest = hashlib.sha256(topic.encode()).hexdigest()[:12]
    return f"{NAME_PREFIX}-worker-{digest}"


def group_id(sync: ObjectRef, target: str) -> str:
    """One consumer group per (sync, target): a slow target never holds back another."""
    return f"{NAME_PREFIX}.{sync.namespace}.{sync.name}.{target}"
