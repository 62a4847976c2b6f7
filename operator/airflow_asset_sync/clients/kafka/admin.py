"""`ensure_topic`: create the sync's topic unless it exists (aiokafka's admin client)."""

from __future__ import annotations

import logging

from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from airflow_asset_sync.clients.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


async def ensure_topic(settings: KafkaSettings) -> bool:
    """Create the topic unless it exists; True if this call created it.

    Existence is checked first (a plain metadata read), so a cluster where a platform team
    pre-creates topics and denies CreateTopics to applications works without extra rights.
    Without an explicit replication factor it is min(3, number of brokers): durable on a
    real cluster, still valid on a single-broker development setup.
    """
    admin = AIOKafkaAdminClient(**settings.client_kwargs("admin"))
    try:
        await admin.start()
        if settings.topic in await admin.list_topics():
            return False
        replication = settings.topic_replication_factor
        if replication is None:
            cluster = await admin.describe_cluster()
            replication = max(1, min(3, len(cluster.get("brokers") or [])))
        response = await admin.create_topics(
            [NewTopic(settings.topic, settings.topic_partitions, replication)],
            timeout_ms=settings.request_timeout_ms,
        )
        for topic_error in response.topic_errors:
            code, message = topic_error[1], (topic_error[2] if len(topic_error) > 2 else None)
            if code in (0, kerr.TopicAlreadyExistsError.errno):
                continue
            raise kerr.for_code(code)(message or f"creating topic {settings.topic!r}")
        log.info(
            "created kafka topic %s (%d partitions, replication %d)",
            settings.topic,
            settings.topic_partitions,
            replication,
        )
        return True
    except (TimeoutError, kerr.KafkaError, OSError, ValueError) as exc:
        raise settings.error(f"kafka: cannot ensure topic {settings.topic!r} exists", exc) from exc
    finally:
        await admin.close()
