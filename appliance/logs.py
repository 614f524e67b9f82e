"""JSON logs on stdout, one object per line, with the request's correlation id on every line."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any, Final

import orjson

correlation_id: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar("correlation_id", default=None)
# The request's trace id while tracing is on (appliance/tracing/): on every line beside the correlation id.
trace_id: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar("trace_id", default=None)
# The API key's name (never the key) of the request a line belongs to.
key_name: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar("key_name", default=None)

_RESERVED: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; `extra={...}` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid is not None:
            entry["correlation_id"] = cid
            tid = trace_id.get()
            if tid is not None:
                entry["trace_id"] = tid
        key = key_name.get()
        if key is not None:
            entry["key"] = key
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "info") -> None:
    """Route every logger to stdout as JSON. Safe to call more than once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("granian", "granian.access", "_granian", "aiohttp.access", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def access_line(fields: dict[str, Any]) -> None:
    """Write one access-log line directly (the hot path skips the logging machinery)."""
    fields["ts"] = round(time.time(), 3)
    fields["level"] = "info"
    fields["logger"] = "access"
    sys.stdout.buffer.write(orjson.dumps(fields) + b"\n")
    sys.stdout.buffer.flush()
