"""Server-sent events as the OpenAI API uses them: `data: <json>\\n\\n`, ending with `data: [DONE]`.

Pure functions and a push decoder; no sockets.
"""

from __future__ import annotations

from typing import Final

DONE: Final = b"[DONE]"
DONE_EVENT: Final = b"data: [DONE]\n\n"
# One event is one chunk of an answer, normally well under 1 kB; the largest real ones carry a
# whole tool call's arguments or an image, a few MB at most.
DEFAULT_MAX_EVENT_BYTES: Final = 8 * 1024 * 1024


def encode(data: bytes) -> bytes:
    """One event carrying `data` (which must not contain a newline)."""
    return b"data: " + data + b"\n\n"


class EventTooLarge(ValueError):
    """One SSE event (or a line of it) is longer than the decoder holds."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an SSE event of more than {limit} bytes")
        self.limit = limit


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the `data` payload of each completed event.

    Multi-line `data:` fields are joined with `\\n`; comments (`:`) and other fields
    (`event:`, `id:`, `retry:`) are skipped. Handles `\\n`, `\\r\\n` and `\\r` line ends,
    a `\\r\\n` split between two pieces included.

    It holds at most `max_event_bytes` of one event, counted as sent (`data: ` and line ends
    included): its data lines so far and the line still arriving, kept in its pieces and joined
    once, when its end comes. Past that, `feed` raises `EventTooLarge`, and the stream is not
    worth reading further.
    """

    __slots__ = ("_cr", "_data", "_data_bytes", "_limit", "_pending", "_pending_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._limit = max_event_bytes
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._pending: list[bytes] = []  # the line still arriving
        self._pending_bytes = 0
        self._cr = False  # the last piece ended with \r: a \n opening the next one is the same line end

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[bytes] = []
        data, size, limit = self._data, self._data_bytes, self._limit
        start = 0
        end = chunk.find(b"\n")
        if end >= 0 and self._pending:  # the line still arriving ends here: joined once
            chunk = b"".join(self._pending) + chunk
            end += self._pending_bytes
            self._pending, self._pending_bytes = [], 0
        while end >= 0:
            line = chunk[start:end]
            start = end + 1
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data, size = [], 0
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                size += len(line) + 1
                if size > limit:
                    raise EventTooLarge(limit)
            end = chunk.find(b"\n", start)
        self._data, self._data_bytes = data, size
        if start < len(chunk):
            self._pending.append(chunk[start:] if start else chunk)
            self._pending_bytes += len(chunk) - start
            if self._pending_bytes + size > limit:
                raise EventTooLarge(limit)
        return events

    def close(self) -> list[bytes]:
        """Flush an event the stream ended without a blank line after."""
        if not (self._pending or self._data):
            return []
        self._cr = False
        return self.feed(b"\n\n")
