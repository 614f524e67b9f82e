"""Server-sent events as the OpenAI API uses them: `data: <json>\\n\\n`, ending with `data: [DONE]`.

Pure functions and a push decoder; no sockets.
"""

from __future__ import annotations

from typing import Final

DONE: Final = b"[DONE]"
DONE_EVENT: Final = b"data: [DONE]\n\n"


def encode(data: bytes) -> bytes:
    """One event carrying `data` (which must not contain a newline)."""
    return b"data: " + data + b"\n\n"


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the `data` payload of each completed event.

    Multi-line `data:` fields are joined with `\\n`; comments (`:`) and other fields
    (`event:`, `id:`, `retry:`) are skipped. Handles `\\n`, `\\r\\n` and `\\r` line ends.
    """

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + 1
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        self._buf = buf[start:]
        return events

    def close(self) -> list[bytes]:
        """Flush an event the stream ended without a blank line after."""
        events = self.feed(b"\n\n") if self._buf or self._data else []
        self._buf = b""
        return events
