"""Reading a request body: bounded in bytes and in time, decoded as JSON once.

`RequestContext` refuses a declared `Content-Length` over the limit before any resource
runs and puts the limits on `req.context.body_limits`; a chunked body is counted here
as it arrives. A client that trickles its body slower than `timeout_s` in all is cut off
(408), so a slow sender cannot hold a worker's connection open indefinitely.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

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
    try:
        # asyncio.timeout, not wait_for: wait_for runs the read as a task of its own, which
        # costs more than the read of a small body (measured, docs/benchmarks.md).
        async with asyncio.timeout(limits.timeout_s):
            raw = await _read(req, limits.max_bytes)
    except TimeoutError as exc:
        raise RequestTimeout(f"The request body did not arrive within {limits.timeout_s:g} s") from exc
    if not raw:
        raise WireError("The request body is empty; a JSON object is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"Malformed JSON in the request body: {exc.msg} at position {exc.pos}") from exc


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
