"""`POST /v1/responses` (the OpenAI Responses API) to the OpenAI chat shape the gateway routes.
Pure functions: decoded JSON in, values out; `WireError` on a bad body.

Two steps, since a continuation needs the stored conversation in between:
`parse_responses(body)` checks the body and normalises its input into items (each with an
id, a string `content` made an `input_text` / `output_text` part), and
`chat_body(call, history)` makes the chat request from the earlier items and these.

Mapped: `input` (a string, or items: messages with `input_text` / `output_text` / `refusal` /
`input_image` parts, `function_call`, `function_call_output` (its images, which a `tool`
message cannot hold, in a user message after the tool results)), `instructions` (a system
message, not carried into a continuation, as OpenAI does), function `tools` (a `namespace`'s
functions flattened to `<namespace>__<name>`, mapped back on the way out), `tool_choice`,
`parallel_tool_calls`, `max_output_tokens` (-> `max_tokens`), `temperature`, `top_p`,
`text.format` (`json_schema` / `json_object` -> `response_format`), `text.verbosity`,
`reasoning.effort` (-> `reasoning_effort`), `user` / `safety_identifier` (-> `user`), `stream`,
`store` (default true), `metadata` (kept with the response, not sent upstream) and
`previous_response_id`. `developer` messages become `system` ones, which local chat templates
know. Dropped: `reasoning` items given back as input (a chat backend has no use for them);
hosted tools (`web_search`, `file_search`, ...), which no chat backend runs, with a warning;
`include`, `prompt_cache_key`, `truncation`, `service_tier`, `client_metadata` and unknown
fields (logged at debug). Refused with 400: `background`, `conversation`, `prompt`
templates, `input_file` parts, `file_id` images, `item_reference` and other item types a chat
backend cannot take, a `tool_choice` naming a hosted tool; bodies nested too deep or with too
many items (`appliance.wire.bounds`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from appliance.wire.bounds import MAX_MESSAGES, check_count, check_depth
from appliance.wire.errors import WireError

log = logging.getLogger(__name__)

KNOWN: Final = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
    "temperature", "top_p", "text", "reasoning", "previous_response_id", "store", "metadata", "stream",
    "user", "safety_identifier", "include", "prompt_cache_key", "truncation", "service_tier",
    "client_metadata", "stream_options", "top_logprobs", "max_tool_calls", "background", "conversation",
    "prompt",
})
_REFUSED: Final = {"background": "background responses are not supported by this gateway",
                   "conversation": "conversations are not supported by this gateway; use previous_response_id",
                   "prompt": "prompt templates are not supported by this gateway"}
NAMESPACE_SEPARATOR: Final = "__"
_ROLES: Final = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_ID_PREFIX: Final = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
MAX_METADATA: Final = 16
_TOOL_TYPE: Final = re.compile(r"[a-z0-9_.-]{1,40}")


def new_id(prefix: str) -> str:
    """An OpenAI-style object id: `resp_...`, `msg_...`, `fc_...`."""
    return f"{prefix}_{os.urandom(24).hex()}"


@dataclass(frozen=True, slots=True)
class ResponsesCall:
    """A validated Responses request: what the chat body is made of, and what the response
    object echoes back."""

    model: str
    stream: bool
    store: bool
    items: list[dict[str, Any]]          # this request's input, normalised, each with an id
    instructions: str | None
    previous_response_id: str | None
    options: dict[str, Any]              # chat fields: sampling, tools, tool_choice, response_format, ...
    echo: dict[str, Any]                 # request fields the response object repeats
    metadata: dict[str, str]
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat tool name -> (namespace, name)
    warnings: tuple[str, ...] = ()


def parse_responses(body: Any, *, max_items: int = MAX_MESSAGES) -> ResponsesCall:
    """Check a decoded Responses body; raises `WireError` naming the field."""
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    for name, why in _REFUSED.items():
        if body.get(name) not in (None, False):
            raise WireError(f"{name}: {why}", name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("model: a non-empty string is required", "model")
    stream = _bool(body, "stream", False)
    store = _bool(body, "store", True)
    items = _input(body.get("input"), max_items)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise WireError("instructions: must be a string", "instructions")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise WireError("previous_response_id: must be a non-empty string", "previous_response_id")
    options: dict[str, Any] = {}
    echo: dict[str, Any] = {"temperature": None, "top_p": None, "max_output_tokens": None,
                            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                            "text": {"format": {"type": "text"}}, "reasoning": {"effort": None, "summary": None},
                            "user": None}
    for name, high in (("temperature", 2.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= high:
                raise WireError(f"{name}: must be a number between 0 and {high:g}", name)
            options[name] = echo[name] = value
    cap = body.get("max_output_tokens")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise WireError("max_output_tokens: must be a positive integer", "max_output_tokens")
        options["max_tokens"] = echo["max_output_tokens"] = cap
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise WireError("parallel_tool_calls: must be a boolean", "parallel_tool_calls")
        echo["parallel_tool_calls"] = parallel
    user = body.get("safety_identifier") or body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise WireError("user: must be a string", "user")
        options["user"] = echo["user"] = user
    tools, namespaced, warnings = _tools(body.get("tools"))
    if tools:
        options["tools"] = tools
        if parallel is not None:
            options["parallel_tool_calls"] = parallel
    echo["tools"] = body.get("tools") or []
    choice = body.get("tool_choice")
    if choice is not None:
        options["tool_choice"] = _tool_choice(choice, namespaced)
        echo["tool_choice"] = choice
    options.update(_text(body.get("text"), echo))
    options.update(_reasoning(body.get("reasoning"), echo))
    metadata = _metadata(body.get("metadata"))
    if log.isEnabledFor(logging.DEBUG):
        dropped = sorted(set(body) - KNOWN)
        if dropped:
            log.debug("responses fields dropped", extra={"fields": dropped})
    return ResponsesCall(model, stream, store, items, instructions, previous, options, echo, metadata,
                         namespaced, tuple(warnings))


def chat_body(call: ResponsesCall, history: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The chat request: instructions, the earlier conversation's items, then this input."""
    messages: list[dict[str, Any]] = []
    if call.instructions:
        messages.append({"role": "system", "content": call.instructions})
    images: list[dict[str, Any]] = []  # from tool results: a user message after the run of them
    for item in [*history, *call.items]:
        if images and item.get("type") != "function_call_output":
            messages.append({"role": "user", "content": images})
            images = []
        images += _append(messages, item, call.namespaced)
    if images:
        messages.append({"role": "user", "content": images})
    if not messages:
        raise WireError("input: the conversation is empty", "input")
    return {"model": call.model, "messages": _lead_system(messages), "stream": call.stream, **call.options}


# -- input items --------------------------------------------------------------------------

def _input(raw: Any, max_items: int) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": raw}]}]
    if not isinstance(raw, list) or not raw:
        raise WireError("input: a string or a non-empty array of items is required", "input")
    check_count(raw, max_items, "input")
    return [_item(item, f"input[{i}]") for i, item in enumerate(raw)]


def _item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise WireError(f"{where}: must be an object", where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return _message(item, where)
    out: dict[str, Any]
    if kind == "function_call":
        out = {"type": "function_call", "call_id": _string(item, "call_id", where),
               "name": _string(item, "name", where), "arguments": _arguments(item.get("arguments"), where),
               "status": "completed"}
        if isinstance(item.get("namespace"), str) and item["namespace"]:
            out["namespace"] = item["namespace"]
    elif kind == "function_call_output":
        out = {"type": "function_call_output", "call_id": _string(item, "call_id", where),
               "output": _tool_output(item.get("output"), where), "status": "completed"}
    elif kind == "reasoning":
        out = {k: v for k, v in item.items() if k in ("summary", "content", "encrypted_content")}
        out["type"] = "reasoning"
    else:
        raise WireError(f"{where}.type: '{kind}' items are not supported by this gateway", f"{where}.type")
    given = item.get("id")
    return {"id": given if isinstance(given, str) and given else new_id(_ID_PREFIX[kind]), **out}


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise WireError(f"{where}.role: must be one of {sorted(_ROLES)}", f"{where}.role")
    content = item.get("content")
    text_part = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts = [{"type": text_part, "text": content}]
    elif isinstance(content, list):
        parts = [_part(p, f"{where}.content[{j}]", role) for j, p in enumerate(content)]
    else:
        raise WireError(f"{where}.content: must be a string or an array of content parts", f"{where}.content")
    given = item.get("id")
    return {"id": given if isinstance(given, str) and given else new_id("msg"), "type": "message",
            "role": role, "status": "completed", "content": parts}


def _part(part: Any, where: str, role: str) -> dict[str, Any]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise WireError(f"{where}: must be a content part object with a 'type'", where)
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise WireError(f"{where}.text: a string is required", f"{where}.text")
        kind = "output_text" if role == "assistant" else "input_text"
        return {"type": kind, "text": part["text"], **({"annotations": []} if kind == "output_text" else {})}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "refusal", "refusal": part["refusal"]}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise WireError(f"{where}: an input_image needs an 'image_url' (a URL or a data URL); "
                            "file ids are not supported by this gateway", f"{where}.image_url")
        return {"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"}
    raise WireError(f"{where}.type: '{kind}' parts are not supported by this gateway", f"{where}.type")


def _tool_output(output: Any, where: str) -> str | list[dict[str, Any]]:
    """A function call's output: a string, or text and image parts (checked like a message's)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        parts = [_part(p, f"{where}.output[{k}]", "user") for k, p in enumerate(output)]
        if any(p["type"] == "refusal" for p in parts):
            raise WireError(f"{where}.output: only text and image parts are supported", f"{where}.output")
        return parts
    raise WireError(f"{where}.output: must be a string or an array of content parts", f"{where}.output")


def _append(messages: list[dict[str, Any]], item: Mapping[str, Any],
            namespaced: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """One item onto the chat messages: a function call joins the assistant message before it.
    Returns the image parts of a tool result, which a chat `tool` message cannot hold."""
    kind = item.get("type")
    if kind == "message":
        role = _ROLES[str(item.get("role"))]
        parts = item.get("content") or []
        if role == "assistant":
            text = "".join(str(p.get("text") or p.get("refusal") or "") for p in parts)
            messages.append({"role": "assistant", "content": text})
        elif all(p.get("type") == "input_text" for p in parts):
            messages.append({"role": role, "content": "\n".join(str(p.get("text", "")) for p in parts)})
        else:
            messages.append({"role": role, "content": [_chat_part(p) for p in parts]})
    elif kind == "function_call":
        name = str(item.get("name") or "")
        if item.get("namespace"):
            name = f"{item['namespace']}{NAMESPACE_SEPARATOR}{name}"
        call = {"id": str(item.get("call_id")), "type": "function",
                "function": {"name": name, "arguments": str(item.get("arguments") or "{}")}}
        last = messages[-1] if messages else None
        if last is not None and last.get("role") == "assistant" and "tool_calls" not in last:
            last["tool_calls"] = [call]
            last["content"] = last.get("content") or None
        elif last is not None and last.get("role") == "assistant":
            last["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        parts = output if isinstance(output, list) else [{"type": "input_text", "text": str(output)}]
        images = [_chat_part(p) for p in parts if p.get("type") == "input_image"]
        text = "\n".join(str(p.get("text", "")) for p in parts if p.get("type") != "input_image")
        if images and not text:
            text = f"({len(images)} image{'s' if len(images) > 1 else ''} in the next message)"
        messages.append({"role": "tool", "tool_call_id": str(item.get("call_id")), "content": text})
        return images
    # reasoning items: nothing a chat backend takes
    return []


def _chat_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if part.get("type") == "input_image":
        image: dict[str, Any] = {"url": part.get("image_url")}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": str(part.get("text", ""))}


def _lead_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leading system messages (instructions, developer messages) as one: many local chat
    templates take a single system message, first."""
    lead = 0
    while lead < len(messages) and messages[lead]["role"] == "system" and isinstance(messages[lead]["content"], str):
        lead += 1
    if lead < 2:
        return messages
    return [{"role": "system", "content": "\n\n".join(m["content"] for m in messages[:lead])}, *messages[lead:]]


# -- options ------------------------------------------------------------------------------

def _tools(raw: Any) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]], list[str]]:
    if raw is None:
        return [], {}, []
    if not isinstance(raw, list):
        raise WireError("tools: must be an array", "tools")
    out: list[dict[str, Any]] = []
    namespaced: dict[str, tuple[str, str]] = {}
    hosted: list[str] = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise WireError(f"{where}: must be a tool object with a 'type'", where)
        if tool["type"] == "function":
            out.append(_function(tool, where))
        elif tool["type"] == "namespace":
            space = _string(tool, "name", where)
            inner_tools = tool.get("tools") or []
            if not isinstance(inner_tools, list):
                raise WireError(f"{where}.tools: must be an array", f"{where}.tools")
            for j, inner in enumerate(inner_tools):
                if isinstance(inner, dict) and inner.get("type") == "function":
                    function = _function(inner, f"{where}.tools[{j}]")
                    flat = f"{space}{NAMESPACE_SEPARATOR}{function['function']['name']}"
                    namespaced[flat] = (space, function["function"]["name"])
                    function["function"]["name"] = flat
                    out.append(function)
        else:  # named in a response header: only names that are plainly names
            hosted.append(tool["type"] if _TOOL_TYPE.fullmatch(tool["type"]) else "(unnamed)")
    warnings = [f"hosted tools dropped (a chat backend cannot run them): {', '.join(sorted(set(hosted))[:8])}"] \
        if hosted else []
    return out, namespaced, warnings


def _function(tool: dict[str, Any], where: str) -> dict[str, Any]:
    function: dict[str, Any] = {"name": _string(tool, "name", where)}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise WireError(f"{where}.parameters: must be a JSON schema object", f"{where}.parameters")
    function["parameters"] = parameters or {"type": "object", "properties": {}}
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, namespaced: Mapping[str, tuple[str, str]]) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function" and isinstance(choice.get("name"), str):
            name = choice["name"]
            flat = next((f for f, (space, n) in namespaced.items() if n == name and space == choice.get("namespace")),
                        name)
            return {"type": "function", "function": {"name": flat}}
        if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
            return choice["mode"]
        raise WireError(f"tool_choice: '{kind}' is a hosted tool or a choice this gateway does not support",
                        "tool_choice")
    raise WireError("tool_choice: must be 'auto', 'none', 'required' or a function choice", "tool_choice")


def _text(text: Any, echo: dict[str, Any]) -> dict[str, Any]:
    if text is None:
        return {}
    if not isinstance(text, dict):
        raise WireError("text: must be an object", "text")
    out: dict[str, Any] = {}
    fmt = text.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise WireError("text.format: must be an object", "text.format")
        kind = fmt.get("type")
        if kind == "json_schema":
            schema = fmt.get("schema")
            if not isinstance(schema, dict):
                raise WireError("text.format.schema: a JSON schema object is required", "text.format.schema")
            spec: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
            for key in ("strict", "description"):
                if fmt.get(key) is not None:
                    spec[key] = fmt[key]
            out["response_format"] = {"type": "json_schema", "json_schema": spec}
        elif kind == "json_object":
            out["response_format"] = {"type": "json_object"}
        elif kind != "text":
            raise WireError("text.format.type: must be 'text', 'json_object' or 'json_schema'", "text.format.type")
        echo["text"] = {**echo["text"], "format": fmt}
    verbosity = text.get("verbosity")
    if verbosity is not None:
        if verbosity not in ("low", "medium", "high"):
            raise WireError("text.verbosity: must be 'low', 'medium' or 'high'", "text.verbosity")
        out["verbosity"] = verbosity
        echo["text"] = {**echo["text"], "verbosity": verbosity}
    return out


def _reasoning(reasoning: Any, echo: dict[str, Any]) -> dict[str, Any]:
    if reasoning is None:
        return {}
    if not isinstance(reasoning, dict):
        raise WireError("reasoning: must be an object", "reasoning")
    echo["reasoning"] = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    effort = reasoning.get("effort")
    if effort is None:
        return {}
    if not isinstance(effort, str):
        raise WireError("reasoning.effort: must be a string", "reasoning.effort")
    return {"reasoning_effort": effort}


def _metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA:
        raise WireError(f"metadata: must be an object of at most {MAX_METADATA} string values", "metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise WireError("metadata: keys of at most 64 characters, string values of at most 512", "metadata")
    return dict(metadata)


def _bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise WireError(f"{name}: must be a boolean", name)
    return value


def _string(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise WireError(f"{where}.{name}: a non-empty string is required", f"{where}.{name}")
    return value


def _arguments(arguments: Any, where: str) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict):
        return json.dumps(arguments)
    raise WireError(f"{where}.arguments: must be a JSON string", f"{where}.arguments")
