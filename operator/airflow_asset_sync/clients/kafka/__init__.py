"""The Kafka transport: an idempotent publisher and one consumer group per target (aiokafka).

The only package that imports aiokafka. One module per role (as aiokafka splits producer/
and consumer/); import names from the module that defines them, this file re-exports
nothing (so `errors` or `naming` can be imported without loading the producer):

- `errors`: the `KafkaTransportError` tree, ``retriable`` on the class.
- `naming`: `default_topic`, `group_id`, `static_member_id`.
- `settings`: `KafkaSettings`, from `spec.kafka` plus the resolved Secret values.
- `admin`: `ensure_topic`.
- `records`: a record's value and headers (`parse`, `SCHEMA_VERSION_HEADER`).
- `publisher`: `KafkaPublisher` (the `api.transport.Publisher`).
- `subscription`: `KafkaSubscription` (the `api.transport.Subscription`).

Why these choices:

- **Key = asset URI.** Kafka keeps order per partition and the default partitioner maps a key
  to one partition, so the events of one asset stay in source order however many partitions
  the topic has. The topic is created with **one partition** by default anyway: one consumer
  per target reads it (the worker runs one replica), so more partitions buy no parallelism,
  while one partition keeps the replay order equal to the publish order across assets too,
  and asset events (a few per second at most) are far below what one partition carries.
- **Idempotent producer, acks=all.** `publish` returns only when every record is on all
  in-sync replicas, which is the promise the poller's checkpoint relies on
  (`api.transport`); idempotence keeps the producer's own retries from writing duplicates.
- **Manual commits, earliest reset.** A target's group offset moves only after the replayer
  wrote the event, so a crash redelivers instead of losing. See `KafkaSubscription`.

Credentials reach this package as plain values and are never logged (see `settings`).
"""
