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


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


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
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
