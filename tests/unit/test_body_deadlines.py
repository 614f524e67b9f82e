"""The request body's time limit: a body that stalls past it is a 408 (RequestTimeout), a body
that arrives in time is read, and a cancellation from elsewhere stays a cancellation."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from appliance.api.body import BodyLimits, read_json
from appliance.domain.errors import RequestTimeout


class _Stream:
    def __init__(self, body: bytes, delay_s: float) -> None:
        self._body = body
        self._delay_s = delay_s

    async def read(self) -> bytes:
        await asyncio.sleep(self._delay_s)
        return self._body


def _request(delay_s: float, timeout_s: float, body: bytes = b'{"ok": true}') -> Any:
    return SimpleNamespace(context=SimpleNamespace(body_limits=BodyLimits(max_bytes=1 << 20, timeout_s=timeout_s)),
                           content_length=len(body), stream=_Stream(body, delay_s))


async def test_a_stalled_body_times_out_while_one_beside_it_is_read() -> None:
    slow = asyncio.ensure_future(read_json(_request(delay_s=5.0, timeout_s=0.2)))
    fast = asyncio.ensure_future(read_json(_request(delay_s=0.05, timeout_s=0.2)))
    later = asyncio.ensure_future(read_json(_request(delay_s=0.3, timeout_s=1.0)))
    assert await fast == {"ok": True}
    with pytest.raises(RequestTimeout, match=r"0\.2 s"):
        await slow
    assert await later == {"ok": True}


async def test_a_shorter_limit_arriving_later_is_still_kept() -> None:
    long = asyncio.ensure_future(read_json(_request(delay_s=5.0, timeout_s=3.0)))
    await asyncio.sleep(0)
    short = asyncio.ensure_future(read_json(_request(delay_s=5.0, timeout_s=0.1)))
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(short, 1.0)
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long


async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout() -> None:
    read = asyncio.ensure_future(read_json(_request(delay_s=5.0, timeout_s=10.0)))
    await asyncio.sleep(0.05)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
