"""Whether what a backend sent has the shape the gateway reads: a `chat.completion` body or a
streamed `chat.completion.chunk`.

Only the fields the gateway itself reads are checked (choices, message/delta content and
tool calls, finish reason, usage), so a backend's extra fields never make an answer
malformed. A malformed stream chunk is skipped and counted; a malformed body is a 502.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def chunk_problem(chunk: Mapping[str, Any]) -> str | None:
    """Why `chunk` cannot be read as a stream chunk, or None when it can."""
    return _choices_problem(chunk.get("choices"), "delta") or _usage_problem(chunk.get("usage"))


def body_problem(body: Mapping[str, Any]) -> str | None:
    """Why `body` cannot be read as a chat completion, or None when it can."""
    return _choices_problem(body.get("choices"), "message") or _usage_problem(body.get("usage"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choices_problem(choices: Any, part: str) -> str | None:
    if choices is None:
        return None
    if not isinstance(choices, list):
        return "choices is not an array"
    for choice in choices:
        if not isinstance(choice, Mapping):
            return "a choice is not an object"
        finish = choice.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            return "finish_reason is not a string"
        inner = choice.get(part)
        if inner is None:
            continue
        if not isinstance(inner, Mapping):
            return f"{part} is not an object"
        content = inner.get("content")
        if content is not None and not isinstance(content, str | list):
            return f"{part}.content is not a string"
        problem = _calls_problem(inner.get("tool_calls"), streamed=part == "delta")
        if problem:
            return problem
    return None


def _calls_problem(calls: Any, *, streamed: bool) -> str | None:
    if calls is None:
        return None
    if not isinstance(calls, list):
        return "tool_calls is not an array"
    for call in calls:
        if not isinstance(call, Mapping):
            return "a tool call is not an object"
        if streamed and "index" in call and not _is_int(call["index"]):
            return "a tool call's index is not an integer"
        function = call.get("function")
        if function is None:
            continue
        if not isinstance(function, Mapping):
            return "a tool call's function is not an object"
        for name in ("name", "arguments"):
            value = function.get(name)
            if value is not None and not isinstance(value, str):
                return f"a tool call's function.{name} is not a string"
    return None


def _usage_problem(usage: Any) -> str | None:
    if usage is None:
        return None
    if not isinstance(usage, Mapping):
        return "usage is not an object"
    for name in _USAGE_FIELDS:
        value = usage.get(name)
        if value is not None and not (_is_int(value) and value >= 0):
            return f"usage.{name} is not a non-negative integer"
    return None
