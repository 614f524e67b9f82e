"""Where a JSON object or array written as text ends, read incrementally.

A streamed tool call (`[TOOL_CALLS] [...]`, a Llama 3 JSON call) has no closing tag: it
ends where its outermost bracket closes. `JsonEnd` follows brackets and strings (with their
escapes) across chunks, so each character is looked at once however the text is split.
"""

from __future__ import annotations

_OPENERS = frozenset("{[")
_CLOSERS = frozenset("}]")


class JsonEnd:
    """Feed text; `feed` returns the offset just past the value's end in that text, or -1
    while the value is still open. Leading whitespace is skipped; the value must start with
    `{` or `[` (anything else: `failed`)."""

    __slots__ = ("_depth", "_escape", "_in_string", "_started", "failed")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._started = False
        self.failed = False

    def feed(self, text: str) -> int:
        if self.failed:
            return -1
        depth, in_string, escape, started = self._depth, self._in_string, self._escape, self._started
        for i, ch in enumerate(text):
            if in_string:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    in_string = False
                continue
            if not started:
                if ch.isspace():
                    continue
                if ch not in _OPENERS:
                    self.failed = True
                    return -1
                started = True
            if ch == '"':
                in_string = True
            elif ch in _OPENERS:
                depth += 1
            elif ch in _CLOSERS:
                depth -= 1
                if depth == 0:
                    self._depth, self._in_string, self._escape, self._started = 0, False, False, started
                    return i + 1
        self._depth, self._in_string, self._escape, self._started = depth, in_string, escape, started
        return -1
