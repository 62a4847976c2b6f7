"""Logging set-up: plain text for people, JSON lines for log pipelines.

Fields passed with ``extra=`` (sync, target, event_id, ...) appear in both formats. Nothing
secret is ever passed to a logger; `scrub` is a last line of defence for messages built from
third-party exceptions.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SECRETS: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Values that must never be printed (credentials read at start-up)."""
    _SECRETS.update(v for v in values if v and len(v) >= 4)


def scrub(text: str) -> str:
    for value in _SECRETS:
        text = text.replace(value, "***")
    return text


#: kopf attaches these to its per-object records: its whole settings object (a screenful on
#: every line) and a flag of its own. Its `k8s_ref` is kept, shortened to `object=<ns>/<name>`.
_KOPF_INTERNAL = {"settings", "k8s_skip"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = {
        k: v
        for k, v in vars(record).items()
        if k not in _STANDARD and not k.startswith("_") and k not in _KOPF_INTERNAL
    }
    ref = fields.pop("k8s_ref", None)
    if isinstance(ref, dict):
        namespace, name = ref.get("namespace"), ref.get("name")
        fields["object"] = f"{namespace}/{name}" if namespace else str(name)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        entry.update(
            {
                k: v if isinstance(v, int | float | bool | None) else scrub(str(v))
                for k, v in _fields(record).items()
            }
        )
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = scrub(super().format(record))
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={scrub(str(v))}" for k, v in fields.items())
        return line


def configure(*, fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp.access: kopf's liveness endpoint logs every probe at INFO.
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
