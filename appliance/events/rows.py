"""From a PIPELINE message to the rows it becomes. Raises `SchemaError` for a message the
persister cannot store (bad JSON, unknown subject, newer schema, missing or mistyped field)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from appliance.domain.events import PIPELINE, SCHEMA_VERSION, TELEMETRY
from appliance.domain.messages import first_system_text, last_user_text

Row = dict[str, Any]


class SchemaError(ValueError):
    """The message does not fit the schema this persister knows."""


def _get(p: Mapping[str, Any], key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    value = p.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        raise SchemaError(f"field {key!r} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def _number(p: Mapping[str, Any], key: str) -> float | None:
    value = _get(p, key, (int, float), True)
    return None if value is None else float(value)


def _chat(p: Mapping[str, Any], base: Row) -> list[tuple[str, Row]]:
    usage = _get(p, "usage", dict)
    messages = _get(p, "messages", list)
    row = {**base, "model": _get(p, "model", str), "upstream_model": _get(p, "upstream_model", str, True),
           "backend": _get(p, "backend", str), "route": _get(p, "route", str), "streaming": _get(p, "streaming", bool),
           "messages": Jsonb(messages), "response_text": _get(p, "response_text", str),
           "finish_reason": _get(p, "finish_reason", str, True),
           "prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": int(usage.get("completion_tokens") or 0),
           "workspace": _get(p, "workspace", str, True), "sources": Jsonb(p.get("sources") or []),
           "tool_calls": Jsonb(p.get("tool_calls") or []),
           "latency_ms": _number(p, "latency_ms"), "ttft_ms": _number(p, "ttft_ms"), "cost_usd": _number(p, "cost_usd")}
    prompt = _get(p, "prompt", dict, True) or {}
    row["prompt_name"], row["prompt_version"] = prompt.get("name"), prompt.get("version")
    out = [("chat_history", row)]
    prompt = last_user_text(messages)
    system = first_system_text(messages)
    if prompt and row["response_text"]:
        out.append(("chat_pairs", {**base, "model": row["model"], "prompt": prompt, "response": row["response_text"],
                                   "system": system}))
    return out


def _tool_call(p: Mapping[str, Any], base: Row) -> list[tuple[str, Row]]:
    return [("tool_calls", {**base, "call_index": _get(p, "index", int), "name": _get(p, "name", str),
                            "arguments": _get(p, "arguments", str), "call_id": _get(p, "call_id", str, True),
                            "model": _get(p, "model", str)})]


def _lineage(kind: str) -> Callable[[Mapping[str, Any], Row], list[tuple[str, Row]]]:
    def rows(p: Mapping[str, Any], base: Row) -> list[tuple[str, Row]]:
        detail = {k: v for k, v in p.items() if k not in ("schema_version", "event_id", "correlation_id", "ts",
                                                           "workspace", "sources")}
        return [("flow_lineage", {**base, "kind": kind, "workspace": _get(p, "workspace", str, True),
                                  "sources": Jsonb(_get(p, "sources", list)), "detail": Jsonb(detail)})]
    return rows


def _retrieve(p: Mapping[str, Any], base: Row) -> list[tuple[str, Row]]:
    return [("retrievals", {**base, "workspace": _get(p, "workspace", str), "query": _get(p, "query", str),
                            "mode": _get(p, "mode", str), "reranked": _get(p, "reranked", bool),
                            "hits": Jsonb(_get(p, "hits", list)), "latency_ms": float(_get(p, "latency_ms", (int, float)))})]


def _embedding(p: Mapping[str, Any], base: Row) -> list[tuple[str, Row]]:
    return [("embedding_calls", {**base, "model": _get(p, "model", str), "inputs": _get(p, "inputs", int),
                                 "tokens": _get(p, "tokens", int), "dimensions": _get(p, "dimensions", int),
                                 "latency_ms": float(_get(p, "latency_ms", (int, float))), "path": _get(p, "path", str)})]


def _usage_chat(p: Mapping[str, Any], base: Row) -> list[tuple[str, Row]]:
    """A chat's telemetry (failed ones too) as a `usage_events` row (db/usage.py rolls it up)."""
    ttft = _get(p, "ttft_ms", (int, float), True)
    return [("usage_events", {**base, "kind": "chat", "key": _get(p, "key", str, True) or "",
                              "model": _get(p, "model", str), "backend": _get(p, "backend", str),
                              "prompt_tokens": _get(p, "tokens_in", int), "completion_tokens": _get(p, "tokens_out", int),
                              "cost_usd": float(_get(p, "cost_usd", (int, float), True) or 0.0),
                              "gpu_seconds": float(_get(p, "gpu_seconds", (int, float), True) or 0.0),
                              "latency_ms": float(_get(p, "latency_ms", (int, float))),
                              "ttft_ms": None if ttft is None else float(ttft), "status": _get(p, "status", int)})]


def _usage_embedding(p: Mapping[str, Any], base: Row) -> list[tuple[str, Row]]:
    return [("usage_events", {**base, "kind": "embedding", "key": _get(p, "key", str, True) or "",
                              "model": _get(p, "model", str), "backend": "inference",
                              "prompt_tokens": _get(p, "tokens", int), "completion_tokens": 0, "cost_usd": 0.0,
                              "gpu_seconds": 0.0, "latency_ms": float(_get(p, "latency_ms", (int, float))),
                              "ttft_ms": None, "status": 200})]


# What the persister's usage consumer reads from TELEMETRY (the rest of that stream is Vector's).
USAGE_SUBJECTS = (f"{TELEMETRY}.chat", f"{TELEMETRY}.embedding")

MAPPERS: dict[str, Callable[[Mapping[str, Any], Row], list[tuple[str, Row]]]] = {
    f"{TELEMETRY}.chat": _usage_chat,
    f"{TELEMETRY}.embedding": _usage_embedding,
    f"{PIPELINE}.chat.persist": _chat,
    f"{PIPELINE}.tool_call": _tool_call,
    f"{PIPELINE}.flow.lineage": _lineage("chat"),
    f"{PIPELINE}.compose": _lineage("compose"),
    f"{PIPELINE}.retrieve": _retrieve,
    f"{PIPELINE}.embedding": _embedding,
}


def rows_for(subject: str, data: bytes) -> list[tuple[str, Row]]:
    mapper = MAPPERS.get(subject)
    if mapper is None:
        raise SchemaError(f"unknown subject {subject!r}")
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"invalid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise SchemaError("payload is not a JSON object")
    version = payload.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"schema_version {version!r}; this persister stores {SCHEMA_VERSION}")
    base = {"event_id": _get(payload, "event_id", str), "correlation_id": _get(payload, "correlation_id", str),
            "ts": datetime.fromtimestamp(float(_get(payload, "ts", (int, float))), UTC)}
    return mapper(payload, base)
