"""The worker: poll a source, publish to a transport, replay into every target.

The sync engine, free of Kafka, Kubernetes and HTTP libraries (those come in through the
protocols in `api.transport`, `offsets` and `clients.airflow.base`):

- `cursor`: read "new since the checkpoint" from Airflow 2.x or 3.x; `next_checkpoint`.
- `filters`: `spec.assets` include/exclude/sourceDagIds.
- `poller`: cursor -> loop prevention -> filters -> publish -> checkpoint.
- `runs`: finished DAG runs and tasks (`spec.dagRuns`) as events, polled beside `poller`.
- `replayer`: one per target: deliveries -> target Airflow -> commit, with dedup.
- `parking`: events of assets the target does not know yet, kept per asset in the status.
- `channel`: the in-process transport for standalone mode.
- `offsets`: where checkpoint and counters are kept (`FileOffsetStore` standalone).
- `metrics`, `health`: Prometheus metrics, probes, and their HTTP endpoint.
- `pipeline`: `SyncWorker`, which runs all of the above for one sync and stops it cleanly.
- `clock`, `backoff`: injectable time and retry delays.
- `lease`: one writer per sync in a cluster (the sync's Lease; writes wait while it is not held).

Start-up glue that builds real clients and transports from a spec (credentials, entry
points) lives beside these modules but is not part of the engine.
"""
