"""OpenAI chat answers as Ollama `/api/chat` and `/api/generate` replies: one JSON object, or
the NDJSON stream (`done: false` objects, then a last one with `done: true`, `done_reason` and
the counts and durations). Reasoning (`reasoning_content`) is Ollama's `thinking`: in the
message for `/api/chat`, beside `response` for `/api/generate`.

Durations are what the gateway measured, in nanoseconds: `total_duration` from the request's
arrival; streaming, `prompt_eval_duration` up to the first token and `eval_duration` from it
to the end; not streaming, `eval_duration` is the backend's whole answer. `load_duration` is
not known through an OpenAI-compatible API and is left out.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

log = logging.getLogger(__name__)

# Ollama reports a tool call as a normal stop.
DONE_REASONS: Final = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop",
                       "content_filter": "stop"}


def timestamp(unix: float) -> str:
    """`created_at`: RFC 3339, UTC."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def done_reason(finish: Any) -> str:
    return DONE_REASONS.get(finish, str(finish)) if finish else "stop"


@dataclass(frozen=True, slots=True)
class Timings:
    total_ns: int
    prompt_eval_ns: int | None = None
    eval_ns: int | None = None


def tool_calls(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls as Ollama's: arguments an object, not a JSON string."""
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        item: dict[str, Any] = {"function": {"index": i, "name": str(function.get("name") or ""),
                                             "arguments": _arguments(function.get("arguments"))}}
        if call.get("id"):
            item["id"] = str(call["id"])
        out.append(item)
    return out


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = None
    if isinstance(value, dict):
        return value
    log.warning("tool call arguments are not a JSON object; passed on unparsed")
    return {"_unparsed_arguments": str(raw)}


def _stats(finish: Any, usage: Any, timings: Timings) -> dict[str, Any]:
    usage = usage if isinstance(usage, Mapping) else {}
    out: dict[str, Any] = {"done": True, "done_reason": done_reason(finish), "total_duration": timings.total_ns,
                           "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
                           "eval_count": int(usage.get("completion_tokens") or 0)}
    if timings.prompt_eval_ns is not None:
        out["prompt_eval_duration"] = timings.prompt_eval_ns
    if timings.eval_ns is not None:
        out["eval_duration"] = timings.eval_ns
    return out


def reasoning_text(part: Mapping[str, Any]) -> str:
    """An OpenAI message's or delta's reasoning (`reasoning_content`, or `reasoning`): Ollama's `thinking`."""
    value = part.get("reasoning_content")
    if value is None:
        value = part.get("reasoning")
    return value if isinstance(value, str) else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def reply(completion: Mapping[str, Any], *, chat: bool, model: str, created_at: str, timings: Timings) -> dict[str, Any]:
    """A `chat.completion` body as the one object `/api/chat` or `/api/generate` answers with
    `stream: false` (first choice only)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    out: dict[str, Any] = {"model": model, "created_at": created_at}
    text = _text(message.get("content"))
    thinking = reasoning_text(message)
    if chat:
        answer: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            answer["thinking"] = thinking
        calls = message.get("tool_calls")
        if calls:
            answer["tool_calls"] = tool_calls(calls)
        out["message"] = answer
    else:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    out.update(_stats(choice.get("finish_reason"), completion.get("usage"), timings))
    return out


def loaded(*, chat: bool, model: str, created_at: str, unload: bool) -> dict[str, Any]:
    """The answer to a request with nothing to generate (Ollama's load / unload request)."""
    out: dict[str, Any] = {"model": model, "created_at": created_at}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update({"done": True, "done_reason": "unload" if unload else "load"})
    return out


class ReplyStream:
    """Feed each decoded OpenAI chunk to `feed`, then call `finish` once; both return the
    Ollama objects to send, one NDJSON line each. Tool calls, streamed by OpenAI in fragments,
    go out whole in one object before the last, as Ollama sends them."""

    __slots__ = ("_calls", "_chat", "_clock", "_finish", "_first_at", "_model", "_started", "_usage", "_wall")

    def __init__(self, *, chat: bool, model: str, started: float, clock: Callable[[], float] = time.perf_counter,
                 wall: Callable[[], float] = time.time) -> None:
        self._chat = chat
        self._model = model
        self._started = started
        self._clock = clock
        self._wall = wall
        self._calls: dict[int, list[str]] = {}
        self._finish: Any = None
        self._usage: Any = None
        self._first_at: float | None = None

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            thinking = reasoning_text(delta)
            if thinking:
                self._first_token()
                out.append(self._line("", thinking))
            if isinstance(text, str) and text:
                self._first_token()
                out.append(self._line(text))
            for call in delta.get("tool_calls") or ():
                self._first_token()
                slot = self._calls.setdefault(int(call.get("index", 0)), ["", "", ""])
                function = call.get("function") or {}
                slot[0] = str(call.get("id") or slot[0])
                slot[1] += str(function.get("name") or "")
                slot[2] += str(function.get("arguments") or "")
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def finish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._calls and self._chat:
            calls = [{"id": c[0], "function": {"name": c[1], "arguments": c[2]}} for _, c in sorted(self._calls.items())]
            line = self._line("")
            line["message"]["tool_calls"] = tool_calls(calls)
            out.append(line)
        now = self._clock()
        first = self._first_at
        timings = Timings(total_ns=ns(now - self._started),
                          prompt_eval_ns=ns((first if first is not None else now) - self._started),
                          eval_ns=ns(now - first) if first is not None else None)
        last = self._line("")
        del last["done"]
        last.update(_stats(self._finish, self._usage, timings))
        out.append(last)
        return out

    def _first_token(self) -> None:
        if self._first_at is None:
            self._first_at = self._clock()

    def _line(self, text: str, thinking: str = "") -> dict[str, Any]:
        line: dict[str, Any] = {"model": self._model, "created_at": timestamp(self._wall())}
        if self._chat:
            line["message"] = {"role": "assistant", "content": text}
            if thinking:
                line["message"]["thinking"] = thinking
        else:
            line["response"] = text
            if thinking:
                line["thinking"] = thinking
        line["done"] = False
        return line


def ns(seconds: float) -> int:
    """Seconds as the integer nanoseconds Ollama's durations are in."""
    return max(int(seconds * 1e9), 0)
