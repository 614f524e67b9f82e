"""Validation of the OpenAI `POST /v1/chat/completions` body.

The body stays a dict and is passed upstream as it came (unknown fields included, logged at
debug): only what the gateway itself relies on is checked, so a newer client field never
breaks the relay. Besides: nesting depth and message count are bounded (`appliance.wire.bounds`)
and `stop` must be a string or strings, since a backend that does not check it answers 500.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from appliance.wire.bounds import MAX_MESSAGES, check_count, check_depth
from appliance.wire.errors import WireError

log = logging.getLogger(__name__)

ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
KNOWN: Final = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "user", "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format", "functions",
    "function_call", "metadata", "store", "reasoning_effort", "modalities", "audio", "prediction",
    "service_tier", "web_search_options", "verbosity",
})
_NUMBERS: Final = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
                   "frequency_penalty": (-2.0, 2.0)}
_POSITIVE_INTS: Final = ("n", "max_tokens", "max_completion_tokens")


def validate_chat(body: Any, *, max_messages: int = MAX_MESSAGES) -> tuple[str, bool]:
    """Check a decoded body; returns `(model, stream)` or raises `WireError` with `param`."""
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("'model' is required and must be a non-empty string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' is required and must be a non-empty array", "messages")
    check_count(messages, max_messages, "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise WireError(f"messages[{i}] must be an object", f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise WireError(f"messages[{i}].role must be one of {sorted(ROLES)}", f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise WireError(f"messages[{i}].content must be a string or an array", f"messages[{i}].content")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise WireError("'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise WireError("'stream_options' must be an object", "stream_options")
    for name, (low, high) in _NUMBERS.items():
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high):
            raise WireError(f"'{name}' must be a number between {low} and {high}", name)
    for name in _POSITIVE_INTS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise WireError(f"'{name}' must be a positive integer", name)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and (
            not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise WireError("'stop' must be a string or an array of strings", "stop")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise WireError("'tools' must be an array", "tools")
    if log.isEnabledFor(logging.DEBUG):
        unknown = sorted(set(body) - KNOWN)
        if unknown:
            log.debug("unknown chat fields passed through", extra={"fields": unknown})
    return model, stream

