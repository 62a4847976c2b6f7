"""`ServiceError`: the root of every client's error tree, carrying how to report it.

Each client (`clients.airflow.base`, `clients.kafka.errors`) draws its own tree under this
class and sets three class attributes on each error, so the worker decides from data, never
from a message and never from the client's classes:

- ``retriable``: whether retrying may fix it (as aiokafka's flag): an outage is, a wrong
  password or a certificate that does not verify is not, until a person acts.
- ``failure_kind``: what `status.*.failure.kind` says (`api.status.FailureKind`).
- ``component``: which component failed when it is not the side that called (Kafka, for
  either side); None for the side's own Airflow instance.

Why here: `worker.failures` turns errors into status and sits in the engine, which imports
no client module (an import-linter contract); the clients sit above `api`, so a root class
here is one both can see.
"""

from __future__ import annotations

from typing import ClassVar

from airflow_asset_sync.api.status import FailureComponent, FailureKind


class ServiceError(Exception):
    """A client could not get what it asked for from its service (see the module docstring).

    The defaults describe an outage of the caller's own service that retrying may not fix;
    each subclass overrides what differs.
    """

    retriable: ClassVar[bool] = False
    failure_kind: ClassVar[FailureKind] = "Unavailable"
    component: ClassVar[FailureComponent | None] = None
