"""Reading a chat answer as it goes by: text, tool calls, usage and finish reason, from a
complete response body or from streamed chunks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.domain.records import ToolCall, Usage


class Tally:
    """Accumulates what a chat answer said, for the outcome record."""

    __slots__ = ("_calls", "_text", "finish_reason", "first_token_at", "skipped", "usage")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.first_token_at: float | None = None
        self.skipped = 0  # stream events that were not a readable chunk (chunk_shape.py), not relayed

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(name=c[1], arguments=c[2], id=c[0] or None) for _, c in sorted(self._calls.items()))

    def add_body(self, body: Mapping[str, Any]) -> None:
        """A non-streaming `chat.completion` body."""
        for choice in body.get("choices") or ():
            if not isinstance(choice, Mapping):
                continue
            message = choice.get("message") or {}
            content = message.get("content") if "text" not in choice else choice["text"]  # legacy text_completion
            if isinstance(content, str):
                self._text.append(content)
            for i, call in enumerate(message.get("tool_calls") or ()):
                self._merge_call(i, call)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        self._usage(body.get("usage"))

    def add_chunk(self, chunk: Mapping[str, Any], now: float) -> None:
        """One streamed `chat.completion.chunk`."""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping):
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if "text" not in choice else choice["text"]  # legacy text_completion
            if isinstance(content, str) and content:
                if self.first_token_at is None:
                    self.first_token_at = now
                self._text.append(content)
            for call in delta.get("tool_calls") or ():
                if self.first_token_at is None:
                    self.first_token_at = now
                self._merge_call(int(call.get("index", 0)), call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        self._usage(chunk.get("usage"))

    def _merge_call(self, index: int, call: Mapping[str, Any]) -> None:
        slot = self._calls.setdefault(index, ["", "", ""])
        if call.get("id"):
            slot[0] = str(call["id"])
        function = call.get("function") or {}
        if function.get("name"):
            slot[1] += str(function["name"])
        if function.get("arguments"):
            slot[2] += str(function["arguments"])

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, Mapping):
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
