"""OpenAI chat completion chunks in, Messages API stream events out.

The Messages stream is a sequence of content blocks, each opened, filled with deltas and
closed, framed by `message_start` and `message_delta` + `message_stop`. OpenAI chunks carry
text and tool-call fragments in one delta, so the translator keeps the open block and starts
a new one whenever the kind (or the tool call) changes. Reasoning (`reasoning_content`) is a
`thinking` block: `content_block_start` with an empty thinking and signature, `thinking_delta`s,
`content_block_stop`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from appliance.anthropic.messages import matched_stop, reasoning_text, stop_reason


def sse_event(name: str, data: Mapping[str, Any]) -> bytes:
    """One Messages API SSE event: `event: NAME` and a one-line JSON `data`."""
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class StreamTranslator:
    """Feed each decoded OpenAI chunk to `feed`, then call `finish` once; both return SSE bytes."""

    __slots__ = ("_blocks", "_finish", "_id", "_input_tokens", "_matched", "_model", "_open", "_output_tokens",
                 "_started", "_stops", "_tools")

    def __init__(self, model: str, message_id: str, stop_sequences: Sequence[str] = ()) -> None:
        self._model = model
        self._id = message_id
        self._stops = stop_sequences
        self._started = False
        self._blocks = 0  # content blocks started so far; the next one's index
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", openai index)
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self._finish: str | None = None
        self._matched: Any = None
        self._input_tokens: int | None = None
        self._output_tokens = 0

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        out = self._start()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._input_tokens = int(usage.get("prompt_tokens") or 0)
            self._output_tokens = int(usage.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # the Messages API has one answer per request
            delta = choice.get("delta") or {}
            thinking = reasoning_text(delta)
            if thinking:
                if self._open != ("thinking", -1):
                    out += self._open_block(("thinking", -1), {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
            text = delta.get("content")
            if text:
                if self._open != ("text", -1):
                    out += self._open_block(("text", -1), {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                out += self._tool_fragment(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = matched_stop(choice)
        return out

    def finish(self) -> list[bytes]:
        out = self._start()
        out += self._close_block()
        reason, sequence = stop_reason(self._finish, self._matched, tool_use=bool(self._tools),
                                       stop_sequences=self._stops)
        usage: dict[str, int] = {"output_tokens": self._output_tokens}
        if self._input_tokens is not None:
            usage["input_tokens"] = self._input_tokens
        out.append(sse_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage,
        }))
        out.append(sse_event("message_stop", {"type": "message_stop"}))
        return out

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [sse_event("message_start", {"type": "message_start", "message": {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens or 0, "output_tokens": 0},
        }})]

    def _tool_fragment(self, call: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        if index not in self._tools:
            self._tools[index] = self._blocks
            out += self._open_block(("tool", index), {
                "type": "tool_use", "id": call.get("id") or f"toolu_{self._blocks}",
                "name": function.get("name") or "", "input": {}})
        arguments = function.get("arguments")
        if arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}, self._tools[index]))
        return out

    def _open_block(self, key: tuple[str, int], block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        self._open = key
        out.append(sse_event("content_block_start",
                             {"type": "content_block_start", "index": self._blocks, "content_block": block}))
        self._blocks += 1
        return out

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [sse_event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})]

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        return sse_event("content_block_delta", {
            "type": "content_block_delta", "index": self._blocks - 1 if index is None else index, "delta": delta})
