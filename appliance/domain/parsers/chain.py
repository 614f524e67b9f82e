"""The chain over chat answers: reasoning split first, then tool calls recovered from what is
left, on each choice of a streamed answer (chunk by chunk) or of a whole body.

The output is OpenAI's own shape, which every dialect translator reads: reasoning in
`reasoning_content` and `reasoning` (both: older clients read the first, newer the second;
a backend's own field, vLLM's, is passed through and mirrored), recovered calls as real
`tool_calls` (in a stream: one delta per call, whole, with `index`, `id`, `type`, `name` and
`arguments`), and `finish_reason: "tool_calls"` where the answer said "stop".

A chunk whose text is all held back is not sent (unless it carries something else: a role,
a finish reason); a chunk nothing changed is the same object, so the relay can send the
backend's bytes as they came.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from appliance.domain.parsers.reasoning import ThinkSplitter, split_text
from appliance.domain.parsers.stages import DEFAULTS, REASONING, Count, ParserSettings, no_count
from appliance.domain.parsers.tool_text import Piece, RecoveredCall, ToolCallScanner

_TEXT_KEYS: Final = frozenset({"content", "reasoning_content", "reasoning"})
_BASE_KEYS: Final = ("id", "object", "created", "model", "system_fingerprint")


class ChoiceParser:
    """The stages for one answer (one choice index) of a stream."""

    __slots__ = ("_count", "_native", "_recovered", "_said_reasoning", "scanner", "splitter")

    def __init__(self, reasoning: bool, tools: Mapping[str, Any], settings: ParserSettings, count: Count) -> None:
        self.splitter = ThinkSplitter() if reasoning else None
        self.scanner = ToolCallScanner(tools, max_buffer_chars=settings.max_buffer_chars, count=count) if tools else None
        self._count = count
        self._native = 0            # the backend's own tool calls: recovered ones are numbered after them
        self._recovered = 0
        self._said_reasoning = False

    @property
    def recovered(self) -> int:
        return self._recovered

    def transform(self, delta: dict[str, Any]) -> dict[str, Any]:
        """The delta to send for `delta` (the same object when nothing changes)."""
        native = delta.get("tool_calls")
        if native:
            self._note_native(native)
        content = delta.get("content")
        given = delta.get("reasoning_content")
        if given is None:
            given = delta.get("reasoning")
        splitter, scanner = self.splitter, self.scanner
        if not content or not isinstance(content, str):
            if given is None:
                return delta
            return self._build(delta, self._given(given), [])
        if given is None and scanner is None and (splitter is None or splitter.done):
            return delta
        reasoning, text = splitter.feed(content) if splitter is not None else ("", content)
        if splitter is not None and splitter.found and not self._said_reasoning:
            self._said_reasoning = True
            self._count(REASONING, "split")
        pieces: list[Piece] = scanner.feed(text) if scanner is not None and text else ([text] if text else [])
        if given is not None:
            reasoning = self._given(given) + reasoning
        if not reasoning and len(pieces) == 1 and pieces[0] == content and given is None:
            return delta
        return self._build(delta, reasoning, pieces)

    def flush(self) -> tuple[str, list[Piece]]:
        """What is still held back at the end of the answer: reasoning, and text and calls."""
        reasoning, text = self.splitter.finish() if self.splitter is not None else ("", "")
        pieces: list[Piece] = []
        if self.scanner is not None:
            if text:
                pieces += self.scanner.feed(text)
            pieces += self.scanner.finish()
        elif text:
            pieces.append(text)
        return reasoning, pieces

    def merge(self, delta: dict[str, Any], reasoning: str, pieces: list[Piece]) -> dict[str, Any]:
        """`delta` with what `flush` returned added to it."""
        if not reasoning and not pieces:
            return delta
        text = "".join(p for p in pieces if isinstance(p, str))
        calls = self._numbered([p for p in pieces if isinstance(p, RecoveredCall)])
        out = dict(delta)
        if text:
            out["content"] = (out.get("content") or "") + text
        if reasoning:
            joined = (out.get("reasoning_content") or "") + reasoning
            out["reasoning_content"] = out["reasoning"] = joined
        if calls:
            out["tool_calls"] = list(out.get("tool_calls") or ()) + calls
        return out

    def _given(self, given: Any) -> str:
        if not self._said_reasoning:
            self._said_reasoning = True
            self._count(REASONING, "passed_through")
        return given if isinstance(given, str) else ""

    def _build(self, delta: dict[str, Any], reasoning: str, pieces: list[Piece]) -> dict[str, Any]:
        out = {k: v for k, v in delta.items() if k not in _TEXT_KEYS}
        text = "".join(p for p in pieces if isinstance(p, str))
        if text:
            out["content"] = text
        if reasoning:
            out["reasoning_content"] = out["reasoning"] = reasoning
        calls = self._numbered([p for p in pieces if isinstance(p, RecoveredCall)])
        if calls:
            out["tool_calls"] = list(out.get("tool_calls") or ()) + calls
        return out

    def _numbered(self, calls: list[RecoveredCall]) -> list[dict[str, Any]]:
        out = []
        for call in calls:
            out.append({"index": self._native + self._recovered, **call.as_openai()})
            self._recovered += 1
        return out

    def _note_native(self, native: Any) -> None:
        for call in native if isinstance(native, list) else ():
            index = call.get("index") if isinstance(call, Mapping) else None
            if isinstance(index, int) and index + 1 > self._native:
                self._native = index + 1


class StreamChain:
    """The chain over one streamed answer: `feed` each decoded chunk (the chunk to send, the
    same object when unchanged, or None when there is nothing to send yet), then `finish`
    once (a last chunk when the backend ended without a finish reason and text was held)."""

    __slots__ = ("_base", "_count", "_parsers", "_reasoning", "_settings", "_settled", "_tools", "schema")

    def __init__(self, *, reasoning: bool, tools: Mapping[str, Any], settings: ParserSettings = DEFAULTS,
                 count: Count = no_count, schema: Mapping[str, Any] | None = None) -> None:
        self._reasoning = reasoning
        self._tools = tools
        self._settings = settings
        self._count = count
        self._parsers: dict[int, tuple[ChoiceParser, list[bool]]] = {}   # index -> parser, [finished]
        self._base: Mapping[str, Any] = {}
        self._settled = False       # only the reasoning stage, past the start of every answer seen
        self.schema = schema        # a strict json_schema the answer is checked against at the end

    @property
    def active(self) -> bool:
        return self._reasoning or bool(self._tools)

    def feed(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        choices = chunk.get("choices")
        if not choices or not self.active:
            return chunk
        if self._settled and self._passes(choices):
            return chunk
        self._base = chunk
        kept: list[Any] = []
        changed = False
        for choice in choices:
            new = self._choice(choice)
            if new is not choice:
                changed = True
            if new is not None:
                kept.append(new)
        if not self._tools:
            self._settled = all(p.splitter is None or p.splitter.done for p, _ in self._parsers.values())
        if not changed:
            return chunk
        if not kept:
            return None
        return {**chunk, "choices": kept}

    def _passes(self, choices: list[Any]) -> bool:
        """Whether a settled chain has nothing to do with these choices (the relay's common case)."""
        parsers = self._parsers
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if choice.get("index", 0) not in parsers or (delta and ("reasoning_content" in delta or "reasoning" in delta)):
                return False
        return True

    def _choice(self, choice: Any) -> Any:
        if not isinstance(choice, dict):
            return choice
        index = choice.get("index", 0)
        slot = self._parsers.get(index) if isinstance(index, int) else None
        if slot is None:
            slot = (ChoiceParser(self._reasoning, self._tools, self._settings, self._count), [False])
            if isinstance(index, int):
                self._parsers[index] = slot
        parser, finished = slot
        delta = choice.get("delta")
        new_delta = parser.transform(delta) if isinstance(delta, dict) and not finished[0] else delta
        finish = choice.get("finish_reason")
        if finish is not None and not finished[0]:
            finished[0] = True
            new_delta = parser.merge(new_delta if isinstance(new_delta, dict) else {}, *parser.flush())
            if parser.recovered and finish == "stop":
                finish = "tool_calls"
        if new_delta is delta and finish == choice.get("finish_reason"):
            return choice
        if not new_delta and finish is None and not choice.get("logprobs"):
            return None
        return {**choice, "delta": new_delta, "finish_reason": finish}

    def finish(self) -> dict[str, Any] | None:
        """The held-back rest of answers whose backend never sent a finish reason, or None."""
        choices = []
        for index, (parser, finished) in sorted(self._parsers.items()):
            if finished[0]:
                continue
            finished[0] = True
            delta = parser.merge({}, *parser.flush())
            if delta:
                choices.append({"index": index, "delta": delta,
                                "finish_reason": "tool_calls" if parser.recovered else None})
        if not choices:
            return None
        base = {k: self._base[k] for k in _BASE_KEYS if k in self._base}
        return {**base, "choices": choices}


def parse_body(body: dict[str, Any], *, reasoning: bool, tools: Mapping[str, Any],
               settings: ParserSettings = DEFAULTS, count: Count = no_count) -> None:
    """The chain over a whole `chat.completion` body, in place."""
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        given = message.get("reasoning_content")
        if given is None:
            given = message.get("reasoning")
        if isinstance(given, str):
            message["reasoning_content"] = message["reasoning"] = given
            count(REASONING, "passed_through")
        content = message.get("content")
        if not isinstance(content, str) or not content:
            continue
        if reasoning:
            split, content = split_text(content)
            if split is not None:
                count(REASONING, "split")
                joined = (given if isinstance(given, str) else "") + split
                message["reasoning_content"] = message["reasoning"] = joined
        calls: list[RecoveredCall] = []
        if tools and content:
            scanner = ToolCallScanner(tools, max_buffer_chars=settings.max_buffer_chars, count=count)
            pieces = scanner.feed(content) + scanner.finish()
            calls = [p for p in pieces if isinstance(p, RecoveredCall)]
            if calls:
                content = "".join(p for p in pieces if isinstance(p, str))
        if calls:
            native = list(message.get("tool_calls") or ())
            message["tool_calls"] = native + [c.as_openai() for c in calls]
            message["content"] = content if content.strip() else None
            if choice.get("finish_reason") in ("stop", None):
                choice["finish_reason"] = "tool_calls"
        else:
            message["content"] = content
