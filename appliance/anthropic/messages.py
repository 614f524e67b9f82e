"""`POST /v1/messages` (the Anthropic Messages API) to and from the OpenAI chat shape the
gateway routes. Pure functions: decoded JSON in, values out; `WireError` on a bad body.

Mapped: `system` (a string or text blocks), `text` / `image` / `tool_use` / `tool_result`
blocks, client `tools` and `tool_choice` (with `disable_parallel_tool_use`), `max_tokens`,
`stop_sequences`, `temperature`, `top_p`, `metadata.user_id` and `stream`. `top_k` and
`thinking` are not in the OpenAI schema: they come back apart as extensions, `top_k` for the
caller to add when the backend takes it, `thinking` (enabled or disabled) to be told to each
backend in the field it reads (`appliance.wire.thinking`). Reasoning in the answer
(`reasoning_content`, from the backend or the parser chain) becomes a `thinking` block before
the text. Dropped (logged at debug): `cache_control`, `service_tier` and whatever else has no
place in the OpenAI shape. Refused with 400: server tools, documents, images inside tool
results, which the OpenAI shape cannot carry; bodies nested too deep or with too many
messages (`appliance.wire.bounds`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from appliance.wire.bounds import MAX_MESSAGES, check_count, check_depth
from appliance.wire.errors import WireError
from appliance.wire.thinking import THINKING, anthropic_thinking

log = logging.getLogger(__name__)

KNOWN: Final = frozenset({"model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p",
                          "top_k", "metadata", "stream", "tools", "tool_choice", "thinking"})
_UNIT_NUMBERS: Final = ("temperature", "top_p")
_TOOL_CHOICES: Final = {"auto": "auto", "any": "required", "none": "none"}


@dataclass(frozen=True, slots=True)
class MessagesCall:
    """A validated Messages request, translated."""

    model: str
    stream: bool
    body: dict[str, Any]                 # the OpenAI chat body sent upstream
    extensions: dict[str, Any]           # sampling fields outside the OpenAI schema (top_k)
    stop_sequences: tuple[str, ...]


def parse_messages(body: Any, *, max_messages: int = MAX_MESSAGES) -> MessagesCall:
    """Check and translate a decoded Messages body; raises `WireError` naming the field."""
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("model: a non-empty string is required", "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise WireError("max_tokens: a positive integer is required", "max_tokens")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise WireError("messages: a non-empty array is required", "messages")
    check_count(raw, max_messages, "messages")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise WireError("stream: must be a boolean", "stream")

    messages = _system(body.get("system"))
    for i, message in enumerate(raw):
        messages.extend(_message(message, f"messages[{i}]"))
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": stream}
    for name in _UNIT_NUMBERS:
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise WireError(f"{name}: must be a number between 0 and 1", name)
            out[name] = value
    stops = _stop_sequences(body.get("stop_sequences"))
    if stops:
        out["stop"] = list(stops)
    extensions: dict[str, Any] = {}
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise WireError("top_k: must be a non-negative integer", "top_k")
        extensions["top_k"] = top_k
    wish = anthropic_thinking(body.get("thinking"))
    if wish is not None:
        extensions[THINKING] = wish
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tools = body.get("tools")
    if tools is not None:
        out["tools"] = _tools(tools)
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(_tool_choice(choice))
    if log.isEnabledFor(logging.DEBUG):
        dropped = sorted(set(body) - KNOWN)
        if dropped:
            log.debug("anthropic fields dropped", extra={"fields": dropped})
    return MessagesCall(model, stream, out, extensions, stops)


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list):
        texts = [_text(block, f"system[{i}]") for i, block in enumerate(system)]
        return [{"role": "system", "content": "\n".join(texts)}]
    raise WireError("system: must be a string or an array of text blocks", "system")


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise WireError(f"{where}: must be an object", where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise WireError(f"{where}.role: must be 'user' or 'assistant'", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise WireError(f"{where}.content: must be a string or an array of content blocks", f"{where}.content")
    blocks = [_block(block, f"{where}.content[{j}]") for j, block in enumerate(content)]
    return _user(blocks, where) if role == "user" else [_assistant(blocks)]


def _block(block: Any, where: str) -> dict[str, Any]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise WireError(f"{where}: must be a content block object with a 'type'", where)
    return block


def _user(blocks: Sequence[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Tool results become `tool` messages, placed first (the OpenAI shape wants them right
    after the assistant's calls); the rest stays one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            results.append(_tool_result(block, at))
        else:
            raise WireError(f"{at}.type: '{kind}' blocks are not supported by this gateway", f"{at}.type")
    if parts or not results:
        if all(p["type"] == "text" for p in parts):
            results.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            results.append({"role": "user", "content": parts})
    return results


def _assistant(blocks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id") or f"toolu_{len(calls)}"), "type": "function",
                          "function": {"name": str(block.get("name") or ""),
                                       "arguments": json.dumps(block.get("input") or {})}})
        # thinking / redacted_thinking replayed from an earlier turn: the backend has no use for them
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _text(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise WireError(f"{where}: must be a text block with a string 'text'", where)
    return str(block["text"])


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    elif isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise WireError(f"{where}.source: a base64 source (media_type, data) or a url source is required",
                    f"{where}.source")


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise WireError(f"{where}.tool_use_id: a string is required", f"{where}.tool_use_id")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image":
                raise WireError(f"{where}.content[{k}]: images in tool results are not supported by this gateway",
                                f"{where}.content[{k}]")
            texts.append(_text(part, f"{where}.content[{k}]"))
        text = "\n".join(texts)
    else:
        raise WireError(f"{where}.content: must be a string or an array of text blocks", f"{where}.content")
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise WireError("stop_sequences: must be an array of non-empty strings", "stop_sequences")
    return tuple(value)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise WireError("tools: must be an array", "tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise WireError(f"{where}: must be an object", where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise WireError(f"{where}.type: server tools ('{kind}') are not supported by this gateway; "
                            "define client tools with 'input_schema'", f"{where}.type")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise WireError(f"{where}.name: a non-empty string is required", f"{where}.name")
        if not isinstance(schema, dict):
            raise WireError(f"{where}.input_schema: a JSON schema object is required", f"{where}.input_schema")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if not isinstance(choice, dict):
        raise WireError("tool_choice: must be an object", "tool_choice")
    kind = choice.get("type")
    out: dict[str, Any] = {}
    if isinstance(kind, str) and kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise WireError("tool_choice.type: must be 'auto', 'any', 'none' or 'tool' (with 'name')", "tool_choice")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def stop_reason(finish: str | None, matched: Any, *, tool_use: bool,
                stop_sequences: Sequence[str]) -> tuple[str, str | None]:
    """Anthropic `(stop_reason, stop_sequence)` for an OpenAI finish reason. `matched` is the
    stop string a backend reports having hit (vLLM `stop_reason`, SGLang `matched_stop`)."""
    if tool_use or finish in ("tool_calls", "function_call"):
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if finish == "content_filter":
        return "refusal", None
    if isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def matched_stop(choice: Mapping[str, Any]) -> Any:
    """The stop string a backend says it stopped on, if it says."""
    matched = choice.get("stop_reason")
    return matched if matched is not None else choice.get("matched_stop")


def tool_input(arguments: Any) -> dict[str, Any]:
    """OpenAI tool-call arguments (a JSON string) as the object Anthropic's `input` is. Arguments
    that are not a JSON object are kept, unparsed, under `_unparsed_arguments` rather than lost."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        value = None
    if isinstance(value, dict):
        return value
    log.warning("tool call arguments are not a JSON object; passed on unparsed")
    return {"_unparsed_arguments": str(arguments)}


def message_response(completion: Mapping[str, Any], *, model: str, message_id: str,
                     stop_sequences: Sequence[str] = ()) -> dict[str, Any]:
    """An OpenAI `chat.completion` body as an Anthropic `message` (first choice only)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    thinking = reasoning_text(message)
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    text = _reply_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or ()
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": str(call.get("id") or f"toolu_{message_id}_{i}"),
                        "name": str(function.get("name") or ""), "input": tool_input(function.get("arguments"))})
    reason, sequence = stop_reason(choice.get("finish_reason"), matched_stop(choice), tool_use=bool(calls),
                                   stop_sequences=stop_sequences)
    usage = completion.get("usage") or {}
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": {"input_tokens": int(usage.get("prompt_tokens") or 0),
                      "output_tokens": int(usage.get("completion_tokens") or 0)}}


def reasoning_text(part: Mapping[str, Any]) -> str:
    """The reasoning an OpenAI message or delta carries (`reasoning_content`, or `reasoning`),
    as the text of a `thinking` block. Its `signature` is empty: no Anthropic key signed it, and
    this gateway drops thinking blocks a client sends back."""
    value = part.get("reasoning_content")
    if value is None:
        value = part.get("reasoning")
    return value if isinstance(value, str) else ""


def _reply_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""
