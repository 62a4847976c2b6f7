"""What a record on the topic holds: an `Envelope` as JSON, and a schema-version header."""

from __future__ import annotations

from airflow_asset_sync.api.events import Envelope, UnknownMessage

#: Header naming the envelope schema version, so tools can route without parsing the value.
SCHEMA_VERSION_HEADER = "schema-version"


def parse(value: bytes | None) -> tuple[Envelope | None, str | None]:
    """The envelope in a record's value, or None and why not (the problem a delivery carries)."""
    if value is None:
        return None, "empty message"
    try:
        return Envelope.from_bytes(value), None
    except UnknownMessage as exc:
        return None, str(exc)
