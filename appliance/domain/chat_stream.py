"""An open chat stream as a responder sends it: the frames, and one `end` that records it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ChatStream(Generic[T]):
    """Iterate for the answer's frames; call `end(status, error)` exactly once when the
    client has what it will get (the transport's stream wrapper does, however the stream
    ended). `end` closes the upstream request and records the outcome; later calls do
    nothing, so a wrapper's `finally` is safe."""

    __slots__ = ("_end", "_ended", "_frames", "upstream_ms")

    def __init__(self, frames: AsyncIterator[T], upstream_ms: float,
                 end: Callable[[int, str | None], Awaitable[None]]) -> None:
        self._frames = frames
        self.upstream_ms = upstream_ms  # time the backend took to answer with its head
        self._end = end
        self._ended = False

    def __aiter__(self) -> AsyncIterator[T]:
        return self._frames

    async def end(self, status: int, error: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        await self._end(status, error)
