"""The Responses API's `response` object made from an OpenAI chat answer. Pure functions.

Output items, in the order a model produces them: a `reasoning` item when the chat message
carries `reasoning_content` (vLLM's field; the gateway's parser chain puts `<think>` text
there too, and `reasoning` is read as the same), a `message` with one `output_text` part, and
one `function_call` item per tool call (a flattened namespace name split back). Finish
reasons: `length` -> status `incomplete` with reason `max_output_tokens`, `content_filter` ->
`incomplete` with reason `content_filter`, anything else `completed`. Usage: prompt and
completion tokens as `input_tokens` / `output_tokens`, cached and reasoning tokens when the
backend reports them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from appliance.openai.responses import ResponsesCall, new_id


def skeleton(call: ResponsesCall, response_id: str, created_at: int, *, status: str = "in_progress",
             previous_response_id: str | None = None) -> dict[str, Any]:
    """A response object before any output: what `response.created` carries."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": None, "incomplete_details": None, "instructions": call.instructions,
        "max_output_tokens": call.echo["max_output_tokens"], "model": call.model, "output": [],
        "parallel_tool_calls": call.echo["parallel_tool_calls"], "previous_response_id": previous_response_id,
        "reasoning": call.echo["reasoning"], "store": call.store, "temperature": call.echo["temperature"],
        "text": call.echo["text"], "tool_choice": call.echo["tool_choice"], "tools": call.echo["tools"],
        "top_p": call.echo["top_p"], "truncation": "disabled", "usage": None, "user": call.echo["user"],
        "metadata": call.metadata,
    }


def finished(response: dict[str, Any], output: list[dict[str, Any]], finish_reason: str | None,
             usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """`response` completed (or incomplete) with its output and usage."""
    status, details = status_for(finish_reason)
    return {**response, "status": status, "incomplete_details": details, "output": output,
            "completed_at": int(time.time()) if status == "completed" else None, "usage": usage_of(usage)}


def failed(response: dict[str, Any], output: list[dict[str, Any]], code: str, message: str) -> dict[str, Any]:
    return {**response, "status": "failed", "output": output, "error": {"code": code, "message": message}}


def status_for(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def usage_of(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": int(cached)},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": int(reasoning)},
            "total_tokens": prompt + completion}


def reasoning_text(message: Mapping[str, Any]) -> str | None:
    """A chat message's or delta's reasoning: `reasoning_content`, or `reasoning` as newer servers name it."""
    value = message.get("reasoning_content")
    if value is None:
        value = message.get("reasoning")
    return value if isinstance(value, str) and value else None


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "status": status,
            "content": [{"type": "reasoning_text", "text": text}] if text else []}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [] if text is None else [text_part(text)]}


def function_item(item_id: str, call_id: str, name: str, arguments: str, namespaced: Mapping[str, tuple[str, str]],
                  status: str = "completed") -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
                            "name": name, "arguments": arguments}
    if name in namespaced:
        item["namespace"], item["name"] = namespaced[name]
    return item


def output_of(completion: Mapping[str, Any], namespaced: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """The output items of a `chat.completion` body (first choice)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    thought = reasoning_text(message)
    if thought:
        output.append(reasoning_item(new_id("rs"), thought))
    content = message.get("content")
    text = content if isinstance(content, str) else _parts_text(content)
    calls = message.get("tool_calls") or ()
    if text or not calls:
        output.append(message_item(new_id("msg"), text or ""))
    for call in calls:
        function = call.get("function") or {}
        output.append(function_item(new_id("fc"), str(call.get("id") or new_id("call")), str(function.get("name") or ""),
                                    str(function.get("arguments") or ""), namespaced))
    return output


def response_from_chat(call: ResponsesCall, completion: Mapping[str, Any], response_id: str, created_at: int,
                       previous_response_id: str | None) -> dict[str, Any]:
    """A whole `response` object for a non-streamed chat completion."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    base = skeleton(call, response_id, created_at, previous_response_id=previous_response_id)
    return finished(base, output_of(completion, call.namespaced), choice.get("finish_reason"), completion.get("usage"))


def _parts_text(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
