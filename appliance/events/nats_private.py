"""nats-py's private surface, in the one module allowed to touch it.

The relay builds each batch's HPUB frames itself (acks.py) and hands them to nats-py's
outgoing buffer in one write. nats-py has no public call for that: `publish()` takes one
message, and spends more per message validating and encoding headers than building the
whole frame costs (docs/benchmarks.md, "The relay's cost, step by step"). What its `publish()`
does once it has its frame, we do with the same two private coroutines of
`nats.aio.client.Client`:

- `_send_command(cmd: bytes, priority: bool = False)`: append bytes to the pending buffer
  (written at once when that goes over the client's pending-size limit);
- `_flush_pending(force_flush: bool = False)`: kick the flusher task, which writes the buffer
  to the socket.

nats-py is pinned exactly in pyproject.toml for these; tests/events/test_nats_private.py
checks their signatures and a real round trip, and fails naming what changed when an
upgrade changes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS


class FrameWriter:
    """Writes protocol frames we built to one connection, as nats-py's `publish()` writes
    its own. The two coroutines are bound once, here, not looked up per batch."""

    __slots__ = ("_flush_pending", "_send_command")

    def __init__(self, nc: NATS) -> None:
        self._send_command: Callable[[bytes], Awaitable[None]] = nc._send_command
        self._flush_pending: Callable[[], Awaitable[object]] = nc._flush_pending

    async def write(self, frames: bytes) -> None:
        """Queue `frames` (whole protocol messages) and have them written to the socket."""
        await self._send_command(frames)
        await self._flush_pending()
