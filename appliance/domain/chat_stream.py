"""An open chat stream as a responder sends it: the frames, and one `end` that records it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


End = Callable[[int, str | None], Awaitable[None]]


class ChatStream(Generic[T]):
    """Iterate for the answer's frames; `end(status, error)` closes the upstream request
    and records the outcome, once: later calls do nothing.

    The frames call `end(200, None)` themselves as soon as the upstream is exhausted, before
    the dialect's closing frame (`[DONE]`, `message_stop`) can be written: a client that
    stops reading there (the openai SDK does) has the whole answer, and a crash after it
    must not lose the answer's record. The transport's stream wrapper calls `end` in its
    `finally` for every other ending (a failure, a hang-up)."""

    __slots__ = ("_end", "_ended", "_frames", "upstream_ms")

    def __init__(self, frames: Callable[[End], AsyncIterator[T]], upstream_ms: float, end: End) -> None:
        self.upstream_ms = upstream_ms  # time the backend took to answer with its head
        self._end = end
        self._ended = False
        self._frames = frames(self.end)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._frames

    async def end(self, status: int, error: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        await self._end(status, error)
