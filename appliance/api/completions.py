"""POST /v1/completions (legacy): over the same chat path as /v1/chat/completions.

Every prompt is planned as chat (routing, routers, fallbacks, moderation, recording); a backend
that speaks /v1/completions gets the client's body itself and its answer is passed back (all
prompts in one call), any other backend one chat call per prompt, translated back
(openai/completions.py); with `x-workspace` every prompt is asked as chat, since the retrieved
context is a system message. Several prompts asked as chat: JSON answers them concurrently
(`PROMPTS_AT_ONCE` at a time), a stream one after another, each choice with its `index`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.api.access import admit_chat
from appliance.api.body import read_json
from appliance.api.errors import failure_of
from appliance.api.streaming import chat_request, overhead, plan_headers, stream_body, stream_head
from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatRequest
from appliance.domain.chat_stream import ChatStream
from appliance.domain.legacy_text import LegacyText
from appliance.openai.completions import (
    CompletionsCall,
    TextStream,
    parse_completions,
    passed,
    text_completion,
)
from appliance.openai.sse import DONE_EVENT, encode

PROMPTS_AT_ONCE = 8  # a translated JSON request's prompts asked concurrently, at most (one backend's share)


class Completions:
    def __init__(self, chat: ChatService, *, finish: Callable[[falcon.asgi.Request, int], None]) -> None:
        self._chat = chat
        self._finish = finish

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        call = parse_completions(await read_json(req))
        creq = chat_request(req, call.chat_body(0), call.model, call.stream)
        if not (creq.workspace and call.prompts):  # retrieval's context is a system message: asked as chat
            creq.text = LegacyText(call.body, call.prompts, call.chat_refusal)
        plan = await self._chat.plan(creq)
        completion_id, created = f"cmpl-{req.context.cid}", int(time.time())
        if not call.stream:
            reply = await self._chat.complete(creq, plan)
            if plan.text_answer:
                body = reply.body
            else:
                room = asyncio.Semaphore(PROMPTS_AT_ONCE)
                rest = await asyncio.gather(*(self._answer(req, creq, call, p, room) for p in range(1, call.count)))
                body = text_completion(call, [reply.body, *rest], completion_id=completion_id, created=created)
                plan.warnings.extend(call.warnings)
            plan_headers(req, resp, plan)
            resp.data = orjson.dumps(body)
            resp.content_type = falcon.MEDIA_JSON
            overhead(resp, creq, reply.upstream_ms)
            return
        chunks = await self._chat.open_chunks(creq, plan)
        if not plan.text_answer:
            plan.warnings.extend(call.warnings)
        plan_headers(req, resp, plan)
        stream_head(resp, "text/event-stream")
        overhead(resp, creq, chunks.upstream_ms)
        req.context.defer_log = True
        if plan.text_answer:
            resp.stream = stream_body(req, chunks, lambda c: _passed(c, call), self._finish)
        else:
            translator = TextStream(call, completion_id, created)
            resp.stream = stream_body(req, chunks, lambda c: self._translated(c, req, creq, call, translator),
                                      self._finish)

    async def _answer(self, req: falcon.asgi.Request, first: ChatRequest, call: CompletionsCall,
                      prompt: int, room: asyncio.Semaphore) -> dict[str, Any]:
        """Prompt `prompt` asked as chat on its own (planned again: a router may choose another model)."""
        async with room:
            creq = _for_prompt(first, call, prompt)
            plan = await self._chat.plan(creq)
            admit_chat(req, call.model, creq.body, correlation_id=creq.correlation_id)
            return (await self._chat.complete(creq, plan)).body

    async def _translated(self, first: AsyncIterator[dict[str, Any]], req: falcon.asgi.Request, creq: ChatRequest,
                          call: CompletionsCall, translator: TextStream) -> AsyncIterator[bytes]:
        async for chunk in first:
            if (out := translator.feed(0, chunk)) is not None:
                yield encode(orjson.dumps(out))
        for prompt in range(1, call.count):
            nth = _for_prompt(creq, call, prompt)
            plan = await self._chat.plan(nth)
            admit_chat(req, call.model, nth.body, correlation_id=nth.correlation_id)
            stream = await self._chat.open_chunks(nth, plan)
            async for frame in _own(stream, functools.partial(translator.feed, prompt)):
                yield frame
        if (last := translator.close()) is not None:
            yield encode(orjson.dumps(last))
        yield DONE_EVENT


def _for_prompt(first: ChatRequest, call: CompletionsCall, prompt: int) -> ChatRequest:
    """A later prompt's chat request, with its own correlation id (`<id>-p<n>`): its own outcome
    and events, which JetStream would otherwise take for a re-publish of the first's. Its tokens
    are reserved against the key's limits (`admit_chat`) after its plan, right before its call,
    whose outcome settles them."""
    return dataclasses.replace(first, body=call.chat_body(prompt), text=None,
                               correlation_id=f"{first.correlation_id}-p{prompt}")


async def _own(stream: ChatStream[dict[str, Any]],
               feed: Callable[[dict[str, Any]], dict[str, Any] | None]) -> AsyncIterator[bytes]:
    """A later prompt's stream, ended (recorded) here: the stream wrapper ends only the first."""
    status, error = 200, None
    try:
        async for chunk in stream:
            if (out := feed(chunk)) is not None:
                yield encode(orjson.dumps(out))
    except asyncio.CancelledError:
        status, error = 499, "client disconnected"
        raise
    except GeneratorExit:
        status, error = 499, "client disconnected"
        raise
    except Exception as exc:
        failure = failure_of(exc)
        status, error = failure.status, failure.message
        raise
    finally:
        await stream.end(status, error)


async def _passed(chunks: AsyncIterator[dict[str, Any]], call: CompletionsCall) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if (out := passed(chunk, call)) is not None:
            yield encode(orjson.dumps(out))
    yield DONE_EVENT
