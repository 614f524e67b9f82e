"""One wrapper ends every stream: how it ended is recorded once, honestly.

Only a client hanging up is 499; a bug mid-stream is a 500 with its traceback in the log and
the dialect's error frame on the wire; an upstream failure keeps its own status.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import falcon.asgi
import pytest
from falcon import testing

from appliance.api.asgi_scope import RECEIVE_KEY
from appliance.api.streaming import stream_body
from appliance.domain.chat_stream import ChatStream
from appliance.domain.errors import BackendUnavailable


class Ends:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []
        self.finished: list[int] = []

    async def end(self, status: int, error: str | None) -> None:
        self.calls.append((status, error))

    def finish(self, req: falcon.asgi.Request, status: int) -> None:
        self.finished.append(status)


def request(path: str = "/v1/chat/completions", receive: Any = None) -> falcon.asgi.Request:
    req = testing.create_asgi_req(path=path)
    req.context.cid = "cid-1"
    if receive is not None:
        req.scope[RECEIVE_KEY] = receive
    return req


async def frames_then(exc: BaseException | None, *, hang: bool = False) -> AsyncIterator[bytes]:
    yield b"one"
    if hang:
        await asyncio.Event().wait()
    if exc is not None:
        raise exc


async def passthrough(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for frame in frames:
        yield frame


async def collect(req: falcon.asgi.Request, frames: AsyncIterator[bytes], ends: Ends) -> list[bytes]:
    stream = ChatStream(lambda end: frames, 1.0, ends.end)
    return [f async for f in stream_body(req, stream, passthrough, ends.finish)]


async def test_a_whole_answer_is_recorded_before_its_closing_frame_goes_out() -> None:
    ends = Ends()
    seen_at_close: list[list[tuple[int, str | None]]] = []

    async def frames(end: Any) -> AsyncIterator[bytes]:
        yield b"one"
        await end(200, None)          # as ChatService's frames do once the upstream is exhausted

    async def encode(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk
        seen_at_close.append(list(ends.calls))
        yield b"[DONE]"

    stream = ChatStream(frames, 1.0, ends.end)
    out = [f async for f in stream_body(request(), stream, encode, ends.finish)]
    assert out == [b"one", b"[DONE]"]
    assert seen_at_close == [[(200, None)]]   # recorded before [DONE] was handed to the server
    assert ends.calls == [(200, None)]        # and only once


async def test_a_stream_that_ends_well_is_recorded_once_as_200() -> None:
    ends = Ends()
    assert await collect(request(), frames_then(None), ends) == [b"one"]
    assert ends.calls == [(200, None)] and ends.finished == [200]


async def test_a_bug_mid_stream_is_a_500_with_its_traceback_and_the_dialects_error_frame(
        caplog: pytest.LogCaptureFixture) -> None:
    ends = Ends()
    with caplog.at_level(logging.ERROR, logger="appliance.api"):
        out = await collect(request(), frames_then(TypeError("unhashable type: 'list'")), ends)
    assert out[0] == b"one"
    assert json.loads(out[1].removeprefix(b"data: ")) == {"error": {
        "message": "Internal server error", "type": "server_error", "param": None, "code": None}}
    assert ends.calls == [(500, "Internal server error")] and ends.finished == [500]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and isinstance(record.exc_info[1], TypeError)


async def test_an_upstream_failure_mid_stream_keeps_its_status_and_says_why_in_anthropics_shape() -> None:
    ends = Ends()
    out = await collect(request("/v1/messages"), frames_then(BackendUnavailable("backend b ended early")), ends)
    assert out[1].startswith(b"event: error\n")
    assert json.loads(out[1].split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "api_error", "message": "backend b ended early"}}
    assert ends.calls == [(502, "backend b ended early")]


async def test_an_ollama_stream_ends_with_an_error_line() -> None:
    ends = Ends()
    out = await collect(request("/api/chat"), frames_then(RuntimeError("bug")), ends)
    assert out[1] == b'{"error":"Internal server error"}\n'


async def test_a_client_hanging_up_is_499_and_raises_nothing_into_the_server() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    ends = Ends()
    out = await asyncio.wait_for(collect(request(receive=receive), frames_then(None, hang=True), ends), 5)
    assert out == [b"one"]
    assert ends.calls == [(499, "client disconnected")] and ends.finished == [499]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # our own cancellation was taken back


async def test_a_cancellation_from_elsewhere_is_recorded_and_propagates() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    ends = Ends()
    task = asyncio.create_task(collect(request(receive=receive), frames_then(None, hang=True), ends))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ends.calls == [(499, "client disconnected")]
