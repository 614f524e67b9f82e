"""NATS connection and the JetStream streams of docs/architecture.md, created or updated on connect."""

from __future__ import annotations

import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

HOUR = 3600.0


def stream_configs(duplicate_window_s: float) -> list[StreamConfig]:
    return [
        StreamConfig(name="PIPELINE", subjects=["pipeline.>"], retention=RetentionPolicy.LIMITS,
                     max_age=72 * HOUR, storage=StorageType.FILE, duplicate_window=duplicate_window_s),
        StreamConfig(name="TELEMETRY", subjects=["telemetry.>"], retention=RetentionPolicy.LIMITS,
                     max_age=24 * HOUR, storage=StorageType.FILE, duplicate_window=duplicate_window_s),
    ]


_BY_FIRST_TOKEN = {str(c.subjects[0]).split(".", 1)[0]: str(c.name) for c in stream_configs(0) if c.subjects}


def stream_of(subject: str) -> str:
    """The stream that stores `subject` (KeyError for a subject no stream takes)."""
    return _BY_FIRST_TOKEN[subject.split(".", 1)[0]]


async def ensure_streams(js: JetStreamContext, duplicate_window_s: float) -> None:
    for config in stream_configs(duplicate_window_s):
        try:
            await js.stream_info(str(config.name))
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream", extra={"stream": config.name})
        else:
            await js.update_stream(config)


async def connect(url: str, *, name: str, timeout_s: float = 2.0, **callbacks: Any) -> NATS:
    """Connect, failing (NoServersError) when NATS does not answer a first attempt and one
    retry; once connected, the connection reconnects by itself forever."""

    async def error(exc: Exception) -> None:  # nats-py's default prints a traceback per attempt
        log.warning("NATS connection error", extra={"error": repr(exc)})

    callbacks.setdefault("error_cb", error)
    nc = await nats.connect(url, name=name, connect_timeout=timeout_s, max_reconnect_attempts=1,
                            reconnect_time_wait=1, allow_reconnect=True, **callbacks)
    nc.options["max_reconnect_attempts"] = -1
    return nc
