"""`<think>...</think>` at the start of an answer, split from the answer as it streams.

Reasoning models served without a reasoning parser (Qwen3, DeepSeek-R1 distills, QwQ under
llama.cpp or a bare vLLM) write their reasoning inline. Only a block that opens the answer
(after whitespace) counts: a `<think>` later in the text is the answer talking about tags.
A tag split across chunks never reaches the client: while the text so far could still be
the start of `<think>` (or, inside, of `</think>`) it is held back. The whitespace between
`</think>` and the answer is dropped. An answer cut off inside the block (max tokens) is
all reasoning.
"""

from __future__ import annotations

from typing import Final

OPEN: Final = "<think>"
CLOSE: Final = "</think>"
_START, _INSIDE, _AFTER, _DONE = range(4)


def held_suffix(text: str, tag: str) -> int:
    """How many trailing characters of `text` could be the start of `tag` (0 if none)."""
    first = tag[0]
    start = text.find(first, max(len(text) - len(tag) + 1, 0))
    while start != -1:
        if tag.startswith(text[start:]):
            return len(text) - start
        start = text.find(first, start + 1)
    return 0


class ThinkSplitter:
    """Feed answer text as it arrives; each call returns `(reasoning, content)` to send now."""

    __slots__ = ("_buf", "_state", "found")

    def __init__(self) -> None:
        self._state = _START
        self._buf = ""
        self.found = False          # a think block opened the answer

    @property
    def done(self) -> bool:
        """Past the point where anything could still be reasoning: text passes through."""
        return self._state == _DONE

    def feed(self, text: str) -> tuple[str, str]:
        state = self._state
        if state == _DONE:
            return "", text
        if state == _START:
            buf = self._buf + text
            stripped = buf.lstrip()
            if not stripped or OPEN.startswith(stripped):
                self._buf = buf
                return "", ""
            if not stripped.startswith(OPEN):
                self._buf = ""
                self._state = _DONE
                return "", buf
            self.found = True
            self._state = _INSIDE
            self._buf = ""
            return self._inside(stripped[len(OPEN):])
        if state == _INSIDE:
            return self._inside(self._buf + text)
        return self._after(text)

    def _inside(self, buf: str) -> tuple[str, str]:
        end = buf.find(CLOSE)
        if end == -1:
            keep = held_suffix(buf, CLOSE)
            self._buf = buf[len(buf) - keep:] if keep else ""
            return (buf[:len(buf) - keep] if keep else buf), ""
        self._buf = ""
        self._state = _AFTER
        reasoning = buf[:end]
        _, content = self._after(buf[end + len(CLOSE):])
        return reasoning, content

    def _after(self, text: str) -> tuple[str, str]:
        content = text.lstrip()
        if content:
            self._state = _DONE
        return "", content

    def finish(self) -> tuple[str, str]:
        """What is still held back, at the end of the answer."""
        buf, self._buf = self._buf, ""
        state, self._state = self._state, _DONE
        if state == _INSIDE:
            return buf, ""
        return "", buf if state == _START else ""


def split_text(text: str) -> tuple[str | None, str]:
    """A whole answer: `(reasoning or None, content)`."""
    splitter = ThinkSplitter()
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    return (r1 + r2 if splitter.found else None), c1 + c2
