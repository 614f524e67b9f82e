"""Tool calls a model wrote as text, recovered as calls while the answer streams.

Recognised (only when the request offered tools, and only calls naming an offered tool):

| format | looks like |
|---|---|
| hermes  | `<tool_call>{"name": "f", "arguments": {...}}</tool_call>` (Hermes, Qwen); anywhere in the text, several in a row; an unclosed last one at the end of the answer |
| mistral | `[TOOL_CALLS] [{"name": "f", "arguments": {...}}, ...]`, or `[TOOL_CALLS]f[ARGS]{...}` (newer tokenizers) |
| llama3  | `{"name": "f", "parameters": {...}}` as the whole answer, after an optional `<|python_tag|>` |
| json    | a bare JSON object (or array of them) naming an offered tool with `arguments` as the answer |

A call's arguments (an object, or a JSON string of one) are checked against the tool's
`parameters` schema. A marked call (hermes, mistral, python tag) that does not parse, names
no offered tool or does not validate stays in the text, as written, and is counted; a bare
JSON answer that is not a call is just the answer. While text could still become a marker
or a call it is held back (bounded by `max_buffer_chars`; past it, let go as text).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from appliance.domain.parsers.json_value import JsonEnd
from appliance.domain.parsers.reasoning import held_suffix
from appliance.domain.parsers.schemas import schema_problem
from appliance.domain.parsers.stages import TOOL_CALLS, Count, no_count

HERMES_OPEN: Final = "<tool_call>"
HERMES_CLOSE: Final = "</tool_call>"
MISTRAL: Final = "[TOOL_CALLS]"
MISTRAL_ARGS: Final = "[ARGS]"
PYTHON_TAG: Final = "<|python_tag|>"
_MARKERS: Final = (HERMES_OPEN, MISTRAL, PYTHON_TAG)

_TEXT, _HERMES, _JSON, _MISTRAL_NAME = range(4)


@dataclass(frozen=True, slots=True)
class RecoveredCall:
    """A tool call in OpenAI's shape: `arguments` is a JSON string."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


Piece = str | RecoveredCall


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class ToolCallScanner:
    """Feed answer text; each call returns what to send now: text, and recovered calls.

    `tools` maps each offered tool's name to its parameters schema (or None)."""

    __slots__ = ("_buf", "_cand", "_count", "_end", "_format", "_function", "_head", "_ids", "_limit", "_mode",
                 "_seen_text", "_tools", "recovered")

    def __init__(self, tools: Mapping[str, Any], *, max_buffer_chars: int = 262_144, count: Count = no_count,
                 ids: Callable[[], str] = new_call_id) -> None:
        self._tools = tools
        self._limit = max_buffer_chars
        self._count = count
        self._ids = ids
        self._mode = _TEXT
        self._buf = ""              # held back in text, hermes and mistral-name modes
        self._cand = ""             # a JSON candidate so far (its marker first), in JSON mode
        self._head = 0              # where the JSON starts in `_cand`
        self._end = JsonEnd()
        self._format = ""
        self._function = ""         # the name before `[ARGS]`
        self._seen_text = False     # something other than whitespace went out as text
        self.recovered = 0

    def feed(self, text: str) -> list[Piece]:
        if self._mode == _TEXT and self._seen_text and not self._buf and "<" not in text and "[" not in text:
            return [text]   # most of an answer: no marker can start here
        out: list[Piece] = []
        buf = self._buf + text
        self._buf = ""
        while buf:
            mode = self._mode
            if mode == _TEXT:
                buf = self._text(buf, out)
            elif mode == _JSON:
                buf = self._json(buf, out)
            elif mode == _HERMES:
                buf = self._hermes(buf, out)
            else:
                buf = self._mistral_name(buf, out)
        return out

    def finish(self) -> list[Piece]:
        """The end of the answer: what is held back is a call if it parses, else text."""
        out: list[Piece] = []
        mode, self._mode = self._mode, _TEXT
        if mode == _JSON:
            held, self._cand = self._cand, ""
            if self._format != "json":
                self._count(TOOL_CALLS, "unparsable")
            self._emit(held, out)
            return out
        held, self._buf = self._buf, ""
        if mode == _HERMES:
            if self._calls(held[len(HERMES_OPEN):], out, marked=True) is None:
                self._emit(held, out)
        elif mode == _MISTRAL_NAME:
            self._count(TOOL_CALLS, "unparsable")
            self._emit(held, out)
        else:
            self._emit(held, out)
        return out

    # -- modes: each takes the text not yet handled and returns what is left of it

    def _text(self, buf: str, out: list[Piece]) -> str:
        if not self._seen_text:
            stripped = buf.lstrip()
            if not stripped:
                self._buf = buf
                return ""
            head = stripped[:len(MISTRAL)]
            if stripped[0] in "{[" and not MISTRAL.startswith(head):   # `[TOOL_CALLS]` is no JSON
                return self._start_json(buf, len(buf) - len(stripped), "json")
        at, marker = self._first_marker(buf)
        if marker is None:
            keep = max(held_suffix(buf, m) for m in _MARKERS)
            self._emit(buf[:len(buf) - keep] if keep else buf, out)
            self._buf = buf[len(buf) - keep:] if keep else ""
            return ""
        self._emit(buf[:at], out)
        rest = buf[at:]
        if marker == HERMES_OPEN:
            self._mode = _HERMES
            return rest
        if marker == PYTHON_TAG:
            return self._start_json(rest, len(PYTHON_TAG), "llama3")
        after = rest[len(MISTRAL):].lstrip()
        if not after:
            self._buf = rest        # what follows the marker decides its form
            return ""
        if after[0] in "[{":
            return self._start_json(rest, len(MISTRAL), "mistral")
        self._mode = _MISTRAL_NAME
        return rest

    def _start_json(self, buf: str, head: int, fmt: str) -> str:
        self._mode = _JSON
        self._format = fmt
        self._end = JsonEnd()
        self._cand = buf[:head]
        self._head = head
        return buf[head:]

    def _json(self, buf: str, out: list[Piece]) -> str:
        end = self._end.feed(buf)
        if end == -1:
            self._cand += buf
            if self._end.failed:
                return self._give_up(out, "unparsable")
            if len(self._cand) > self._limit:
                return self._give_up(out, "too_long")
            return ""
        candidate = self._cand + buf[:end]
        self._cand = ""
        self._mode = _TEXT
        body = candidate[self._head:]
        if self._function:
            value: Any = {"name": self._function, "arguments": body}
            self._function = ""
            ok = self._calls_value(value, out, marked=True)
        else:
            ok = self._calls(body, out, marked=self._format != "json")
        if ok is None:
            self._emit(candidate, out)
        return buf[end:]

    def _give_up(self, out: list[Piece], outcome: str) -> str:
        held, self._cand = self._cand, ""
        self._mode = _TEXT
        self._function = ""
        if self._format != "json":
            self._count(TOOL_CALLS, outcome)
        self._emit(held, out)
        self._seen_text = True
        return ""

    def _mistral_name(self, buf: str, out: list[Piece]) -> str:
        at = buf.find(MISTRAL_ARGS)
        if at == -1:
            if len(buf) > self._limit or "\n" in buf:
                self._mode = _TEXT
                self._count(TOOL_CALLS, "unparsable")
                self._emit(buf, out)
                return ""
            self._buf = buf
            return ""
        self._function = buf[len(MISTRAL):at].strip()
        return self._start_json(buf, at + len(MISTRAL_ARGS), "mistral")

    def _hermes(self, buf: str, out: list[Piece]) -> str:
        end = buf.find(HERMES_CLOSE)
        if end == -1:
            if len(buf) > self._limit:
                self._mode = _TEXT
                self._count(TOOL_CALLS, "too_long")
                self._emit(buf, out)
                return ""
            self._buf = buf
            return ""
        self._mode = _TEXT
        if self._calls(buf[len(HERMES_OPEN):end], out, marked=True) is None:
            self._emit(buf[:end + len(HERMES_CLOSE)], out)
        return buf[end + len(HERMES_CLOSE):]

    # -- the calls themselves

    def _calls(self, text: str, out: list[Piece], *, marked: bool) -> int | None:
        try:
            value = json.loads(text)
        except ValueError:
            if marked:
                self._count(TOOL_CALLS, "unparsable")
            return None
        return self._calls_value(value, out, marked=marked)

    def _calls_value(self, value: Any, out: list[Piece], *, marked: bool) -> int | None:
        items = value if isinstance(value, list) else [value]
        calls: list[RecoveredCall] = []
        for item in items:
            call, outcome = self._call(item)
            if call is None:
                if marked or outcome == "invalid_arguments":  # a bare JSON answer may just be an answer
                    self._count(TOOL_CALLS, outcome)
                return None
            calls.append(call)
        if not calls:
            return None
        out.extend(calls)
        self.recovered += len(calls)
        for _ in calls:
            self._count(TOOL_CALLS, "recovered")
        return len(calls)

    def _call(self, item: Any) -> tuple[RecoveredCall | None, str]:
        if not isinstance(item, Mapping):
            return None, "unparsable"
        function = item.get("function")
        if isinstance(function, Mapping) and "name" in function:  # {"type": "function", "function": {...}}
            item = function
        name = item.get("name")
        if not isinstance(name, str):
            return None, "unparsable"
        if name not in self._tools:
            return None, "unknown_tool"
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                return None, "unparsable"
        if not isinstance(args, dict):
            return None, "unparsable"
        if schema_problem(args, self._tools[name]) is not None:
            return None, "invalid_arguments"
        return RecoveredCall(self._ids(), name, json.dumps(args, ensure_ascii=False)), "recovered"

    def _first_marker(self, buf: str) -> tuple[int, str | None]:
        best, found = -1, None
        for marker in _MARKERS:
            at = buf.find(marker)
            if at != -1 and (best == -1 or at < best):
                best, found = at, marker
        return best, found

    def _emit(self, text: str, out: list[Piece]) -> None:
        if not text:
            return
        if not self._seen_text and not text.isspace():
            self._seen_text = True
        if out and isinstance(out[-1], str):
            out[-1] += text
        else:
            out.append(text)
