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
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import orjson

from appliance.domain.events import chat_events, embedding_events, retrieval_events
from appliance.domain.ports import Event
from appliance.domain.records import (
    ChatOutcome,
    EmbeddingOutcome,
    RetrievalOutcome,
    RetrievedChunk,
    ToolCall,
    Usage,
)

T = TypeVar("T")


def encode(outcome: object) -> bytes:
    return orjson.dumps(outcome, default=str)


_NAMES: dict[type[Any], frozenset[str]] = {}


def _names(cls: type[Any]) -> frozenset[str]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def _build(cls: type[T], data: Mapping[str, Any], **nested: Any) -> T:
    """`cls` from a JSON object, ignoring fields it does not know (a record from a newer
    version) and leaving out missing ones to their defaults (an older one)."""
    try:
        return cls(**data, **nested)
    except TypeError:  # a field it does not know: the rare case, so only then filter
        names = _names(cls)
        return cls(**{k: v for k, v in data.items() if k in names}, **nested)


def _chat(d: dict[str, Any]) -> Iterator[Event]:
    usage = _build(Usage, d.pop("usage", None) or {})
    calls = tuple(_build(ToolCall, c) for c in d.pop("tool_calls", None) or ())
    return chat_events(_build(ChatOutcome, d, usage=usage, tool_calls=calls))


def _embedding(d: dict[str, Any]) -> Iterator[Event]:
    return embedding_events(_build(EmbeddingOutcome, d))


def _retrieval(d: dict[str, Any]) -> Iterator[Event]:
    hits = tuple(_build(RetrievedChunk, h) for h in d.pop("hits", None) or ())
    return retrieval_events(_build(RetrievalOutcome, d, hits=hits))


KINDS: dict[str, Callable[[dict[str, Any]], Iterator[Event]]] = {
    "chat": _chat, "embedding": _embedding, "retrieval": _retrieval}


def events_of(kind: str, data: bytes) -> list[Event]:
    """The events one spooled outcome stands for; ValueError/TypeError/KeyError when the
    record cannot be read as that kind."""
    expand = KINDS[kind]
    body = orjson.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"a {kind} record is not a JSON object")
    return list(expand(body))
