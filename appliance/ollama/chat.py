"""`POST /api/chat` and `POST /api/generate` bodies translated to the OpenAI chat shape the
gateway routes. Pure functions: decoded JSON in, values out; `WireError` on a bad body.

Mapped: messages (`images` become image parts, assistant `tool_calls` get their arguments
serialised and an id, `tool` messages are matched to the call they answer), `tools`,
`format` (`"json"` -> `json_object`, a schema -> `json_schema`), `stream` (true unless false),
and the options the OpenAI shape has: `temperature`, `top_p`, `num_predict` (-> `max_tokens`),
`stop`, `seed`, `presence_penalty`, `frequency_penalty`. `top_k` and `min_p` come back apart
for the caller to add when the backend takes them, and `think` (true, false or an effort)
as the `thinking` extension, told to each backend in the field it reads
(`appliance.wire.thinking`). Dropped (logged at debug): load-time options (`num_ctx`,
`num_gpu`, ...), other samplers, `keep_alive`, `template`, `context`. Refused with 400: `raw` prompts and `suffix`, which a chat endpoint cannot honour;
bodies nested too deep or with too many messages (`appliance.wire.bounds`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from appliance.wire.bounds import MAX_MESSAGES, check_count, check_depth
from appliance.wire.errors import WireError
from appliance.wire.thinking import THINKING, ollama_think

log = logging.getLogger(__name__)

_OPTIONS: Final = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "num_predict": "max_tokens",
                   "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
_EXTENSIONS: Final = ("top_k", "min_p")
_INTEGERS: Final = frozenset({"seed", "num_predict", "top_k"})
_ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
# The first bytes of the image formats vision models take, to name the data URL's media type.
_MAGIC: Final = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                 (b"RIFF", "image/webp"))


@dataclass(frozen=True, slots=True)
class OllamaCall:
    """A validated chat or generate request, translated. `body` is None when the request asks
    for nothing to be generated (Ollama's "load the model" request)."""

    model: str
    stream: bool
    body: dict[str, Any] | None
    extensions: dict[str, Any]
    keep_alive: Any = None


def parse_chat(body: Any, *, max_messages: int = MAX_MESSAGES) -> OllamaCall:
    """Check and translate a decoded `/api/chat` body."""
    body = _object(body)
    model, stream = _model(body), _stream(body)
    raw = body.get("messages")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise WireError("messages must be an array", "messages")
    check_count(raw, max_messages, "messages")
    if not raw:
        return OllamaCall(model, stream, None, {}, body.get("keep_alive"))
    messages = _messages(raw)
    out: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise WireError("tools must be an array of objects", "tools")
        out["tools"] = tools
    extensions = _apply_options(body, out)
    _log_dropped(body, {"model", "messages", "stream", "tools", "format", "options", "think"})
    return OllamaCall(model, stream, out, extensions)


def parse_generate(body: Any) -> OllamaCall:
    """Check and translate a decoded `/api/generate` body: `system` and `prompt` (with
    `images`) become a system and a user message."""
    body = _object(body)
    model, stream = _model(body), _stream(body)
    if body.get("raw"):
        raise WireError("raw prompts are not supported by this gateway: it talks to backends through a chat API "
                        "that applies the model's template", "raw")
    if body.get("suffix"):
        raise WireError("suffix (fill-in-the-middle) is not supported by this gateway", "suffix")
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise WireError("prompt must be a string", "prompt")
    images = _images(body.get("images"), "images")
    if not prompt and not images:
        return OllamaCall(model, stream, None, {}, body.get("keep_alive"))
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        if not isinstance(system, str):
            raise WireError("system must be a string", "system")
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _content(prompt, images)})
    out: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    extensions = _apply_options(body, out)
    _log_dropped(body, {"model", "prompt", "system", "images", "stream", "format", "options", "suffix", "raw",
                        "think"})
    return OllamaCall(model, stream, out, extensions)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("model is required", "model")
    return model


def _stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is None:
        return True  # Ollama streams unless told not to
    if not isinstance(stream, bool):
        raise WireError("stream must be a boolean", "stream")
    return stream


def _messages(raw: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of the last assistant turn's unanswered calls
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise WireError(f"{where} must be an object", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise WireError(f"{where}.role must be one of {sorted(_ROLES)}", f"{where}.role")
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise WireError(f"{where}.content must be a string", f"{where}.content")
        images = _images(message.get("images"), f"{where}.images")
        if role == "assistant":
            calls = _tool_calls(message.get("tool_calls"), i, where)
            pending = [(c["id"], c["function"]["name"]) for c in calls]
            turn: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": _answered_call(message, pending, i), "content": text})
        else:
            out.append({"role": role, "content": _content(text, images)})
    return out


def _tool_calls(raw: Any, turn: int, where: str) -> list[dict[str, Any]]:
    if not raw:
        return []
    if not isinstance(raw, list):
        raise WireError(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
    calls = []
    for j, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise WireError(f"{where}.tool_calls[{j}].function.name is required", f"{where}.tool_calls[{j}]")
        arguments = function.get("arguments")
        call_id = call.get("id")
        calls.append({"id": call_id if isinstance(call_id, str) and call_id else f"call_{turn}_{j}",
                      "type": "function",
                      "function": {"name": function["name"],
                                   "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {})}})
    return calls


def _answered_call(message: dict[str, Any], pending: list[tuple[str, str]], index: int) -> str:
    """Ollama tool messages name the tool (`tool_name`), not always the call: take the given id,
    else the first unanswered call of that name, else the first unanswered call."""
    given = message.get("tool_call_id")
    name = message.get("tool_name") or message.get("name")
    for k, (call_id, call_name) in enumerate(pending):
        if call_id == given or (given is None and name == call_name):
            return pending.pop(k)[0]
    if isinstance(given, str) and given:
        return given
    if pending:
        return pending.pop(0)[0]
    return f"call_{index}"


def _images(raw: Any, where: str) -> list[str]:
    if not raw:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise WireError(f"{where} must be an array of base64 strings", where)
    return raw


def _content(text: str, images: list[str]) -> str | list[dict[str, Any]]:
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend({"type": "image_url", "image_url": {"url": f"data:{_media_type(data)};base64,{data}"}}
                 for data in images)
    return parts


def _media_type(data: str) -> str:
    try:
        head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4))
    except (binascii.Error, ValueError):
        head = b""
    return next((media for magic, media in _MAGIC if head.startswith(magic)), "image/png")


def _apply_options(body: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Put `format` and the mappable `options` into `out`; returns the extensions."""
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    elif fmt not in (None, ""):
        raise WireError("format must be 'json' or a JSON schema object", "format")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise WireError("options must be an object", "options")
    for name, target in _OPTIONS.items():
        value = _number(options, name)
        if value is None or (name == "num_predict" and value < 1):  # -1 / -2: no limit / fill the context
            continue
        out[target] = value
    stop = options.get("stop")
    if stop:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise WireError("options.stop must be a string or an array of strings", "options.stop")
        out["stop"] = stop
    extensions: dict[str, Any] = {name: value for name in _EXTENSIONS if (value := _number(options, name)) is not None}
    wish = ollama_think(body.get("think"))
    if wish is not None:
        extensions[THINKING] = wish
    if log.isEnabledFor(logging.DEBUG):
        dropped = sorted(set(options) - set(_OPTIONS) - set(_EXTENSIONS) - {"stop"})
        if dropped:
            log.debug("ollama options dropped", extra={"fields": dropped})
    return extensions


def _number(options: dict[str, Any], name: str) -> int | float | None:
    value = options.get(name)
    if value is None:
        return None
    integer = name in _INTEGERS
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise WireError(f"options.{name} must be {'an integer' if integer else 'a number'}", f"options.{name}")
    return value


def _log_dropped(body: dict[str, Any], known: set[str]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        dropped = sorted(set(body) - known)
        if dropped:
            log.debug("ollama fields dropped", extra={"fields": dropped})
