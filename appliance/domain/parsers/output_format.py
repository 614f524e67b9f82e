"""`response_format: {"type": "json_schema", "json_schema": {"strict": true, "schema": ...}}`:
the answer checked against the schema, and what to ask when it does not match.

A local server may not constrain its decoding to the schema (llama.cpp without a grammar
for it, an older vLLM, LM Studio with some models), so a "strict" answer can come back as
prose, fenced JSON or JSON that misses a field. The gateway checks it; on a mismatch it asks
again (`schema_retries` times), telling the model what was wrong, and after that returns the
last answer with a warning header rather than failing the request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from appliance.domain.parsers.schemas import schema_problem


def strict_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schema a request's answer must match, when it asks for a strict json_schema."""
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping) or spec.get("strict") is not True:
        return None
    schema = spec.get("schema")
    return dict(schema) if isinstance(schema, Mapping) else None


def answer_text(body: Mapping[str, Any]) -> str | None:
    """The first choice's text, or None when the answer is tool calls (nothing to check)."""
    choices = body.get("choices") or ()
    choice = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    if message.get("tool_calls"):
        return None
    content = message.get("content")
    return content if isinstance(content, str) else ""


def answer_problem(text: str, schema: Mapping[str, Any]) -> str | None:
    """Why `text` is not a JSON value matching `schema` (one line), or None."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at character {exc.pos})"
    return schema_problem(value, schema)


def retry_messages(messages: list[Any], answer: str, problem: str) -> list[Any]:
    """The conversation to ask again with: the bad answer, and what was wrong with it."""
    return [*messages, {"role": "assistant", "content": answer},
            {"role": "user", "content": f"That answer does not match the required JSON schema: {problem}. "
                                        "Reply again with only the JSON value, matching the schema exactly."}]
