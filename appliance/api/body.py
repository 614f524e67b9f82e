"""Reading a request body: bounded in bytes and in time, decoded as JSON once.

`RequestContext` refuses a declared `Content-Length` over the limit before any resource
runs and puts the limits on `req.context.body_limits`; a chunked body is counted here
as it arrives. A client that trickles its body slower than `timeout_s` in all is cut off
(408), so a slow sender cannot hold a worker's connection open indefinitely.

The time limit is kept by one timer per event loop (`_Deadlines`), not one per request:
`asyncio.timeout` schedules and cancels a timer handle for every body, which cost more
than reading a small body does (9 us against 0.5 us a body on this machine, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any, Final

import falcon.asgi
import orjson

from appliance.domain.errors import PayloadTooLarge, RequestTimeout
from appliance.wire.errors import WireError


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int
    timeout_s: float


async def read_json(req: falcon.asgi.Request) -> Any:
    """The request body decoded as JSON (413 over the size limit, 408 past the time limit,
    400 if empty or malformed)."""
    limits: BodyLimits = req.context.body_limits
    task = asyncio.current_task()
    assert task is not None
    deadlines = _Deadlines.of(asyncio.get_running_loop())
    deadlines.add(task, limits.timeout_s)
    try:
        raw = await _read(req, limits.max_bytes)
    except asyncio.CancelledError:
        if not deadlines.expired(task) or task.uncancel() > 0:  # a cancellation of its own as well
            raise
        raise RequestTimeout(f"The request body did not arrive within {limits.timeout_s:g} s") from None
    finally:
        deadlines.remove(task)
    if not raw:
        raise WireError("The request body is empty; a JSON object is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"Malformed JSON in the request body: {exc.msg} at position {exc.pos}") from exc


class _Deadlines:
    """The body reads waiting on one event loop and when each must end. One timer, armed for the
    earliest deadline, cancels the reads past theirs when it fires and re-arms for the next."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop) -> _Deadlines:
        found = _BY_LOOP.get(loop)
        if found is None:
            found = _BY_LOOP[loop] = _Deadlines(loop)
        return found

    def add(self, task: asyncio.Task[Any], timeout_s: float) -> None:
        deadline = self._loop.time() + timeout_s
        self._waiting[task] = deadline
        if self._timer is None or deadline < self._timer.when():
            self._arm(deadline)

    def remove(self, task: asyncio.Task[Any]) -> None:
        self._waiting.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        return task in self._expired

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time() + 0.001  # the loop runs a timer up to its clock's resolution early
        for task, deadline in list(self._waiting.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        pending = [d for t, d in self._waiting.items() if t not in self._expired]
        if pending:
            self._arm(min(pending))


async def _read(req: falcon.asgi.Request, limit: int) -> bytes:
    if req.content_length is not None:  # checked against the limit by RequestContext
        return await req.stream.read()
    parts: list[bytes] = []
    size = 0
    async for chunk in req.stream:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


_BY_LOOP: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines]] = weakref.WeakKeyDictionary()
