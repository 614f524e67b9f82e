"""Outcomes on disk: how a worker writes what happened into the spool, and how the relay
reads it back as the events of domain/events.py.

A worker writes one record per outcome (kind `chat`, `embedding` or `retrieval`, keyed by
correlation id, data the outcome as JSON): one serialisation on the serving path, however
many events it becomes. Expansion into events is deterministic (event ids come from the
correlation id, start time, subject and index), so re-reading a record after a crash
produces the same `Nats-Msg-Id`s and JetStream drops the repeats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from appliance.domain.events import Recorded, chat_events, embedding_events, retrieval_events
from appliance.domain.ports import Event
from appliance.domain.records import ChatOutcome, EmbeddingOutcome, RetrievalOutcome


def encode(outcome: object) -> bytes:
    return orjson.dumps(outcome, default=str)


def _defaults(cls: type[Any]) -> dict[str, Any]:
    """The fields of `cls` that have defaults, with them: what a record from a version
    before such a field was added lacks."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


# kind -> (the defaults of its outcome's fields, its events)
KINDS: dict[str, tuple[dict[str, Any], Callable[[Recorded], list[Event]]]] = {
    "chat": (_defaults(ChatOutcome), chat_events),
    "embedding": (_defaults(EmbeddingOutcome), embedding_events),
    "retrieval": (_defaults(RetrievalOutcome), retrieval_events),
}


def events_of(kind: str, data: bytes) -> list[Event]:
    """The events one spooled outcome stands for; ValueError/TypeError/KeyError when the
    record cannot be read as that kind. Fields a record lacks take their defaults (a record
    from an older version); fields it has beyond the outcome's are ignored (a newer one)."""
    defaults, expand = KINDS[kind]
    body = orjson.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"a {kind} record is not a JSON object")
    try:
        return expand(body)
    except KeyError:  # the rare case, so only then merge
        return expand(defaults | body)
