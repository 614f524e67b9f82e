"""The Ollama API: `/api/chat` and `/api/generate` over the same chat path as
`/v1/chat/completions` (routing, retrieval with `x-workspace`, recording), `/api/tags`,
`/api/show` and `/api/version` from the model directory, `/api/embed` and `/api/embeddings`
from the embedding service. Errors are `{"error": "..."}` (see errors.py), also mid-stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.api.access import caller_of, check_model, may_see_model, visible_models
from appliance.api.body import read_json
from appliance.api.embeddings import PATH_HEADER
from appliance.api.streaming import chat_request, overhead, plan_headers, stream_body, stream_head
from appliance.domain.chat import ChatService
from appliance.domain.embeddings import EmbeddingService
from appliance.domain.errors import ModelNotFound
from appliance.domain.models import ModelDirectory
from appliance.domain.routing import ModelRouter
from appliance.ollama.chat import OllamaCall, parse_chat, parse_generate
from appliance.ollama.embed import (
    embed_response,
    embeddings_response,
    parse_embed,
    parse_embeddings,
)
from appliance.ollama.models import show_response, tags_response, version_response
from appliance.ollama.replies import ReplyStream, Timings, loaded, ns, reply, timestamp
from appliance.wire.errors import WireError

NDJSON = "application/x-ndjson"
_UNLOAD = (0, "0", "0s", "0m")


class Generation:
    """POST /api/chat (`chat=True`) or /api/generate: translate, plan, answer, translate back."""

    def __init__(self, chat: ChatService, *, chat_shape: bool, finish: Callable[[falcon.asgi.Request, int], None]) -> None:
        self._chat = chat
        self._chat_shape = chat_shape
        self._parse: Callable[[Any], OllamaCall] = parse_chat if chat_shape else parse_generate
        self._finish = finish

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        call = self._parse(await read_json(req))
        req.context.model = call.model
        resp.content_type = falcon.MEDIA_JSON
        if call.body is None:  # nothing to generate: Ollama's load request, answered once the model resolves
            check_model(req, call.model)
            await self._chat.target(call.model)
            resp.data = orjson.dumps(loaded(chat=self._chat_shape, model=call.model, created_at=timestamp(time.time()),
                                            unload=call.keep_alive in _UNLOAD))
            return
        creq = chat_request(req, call.body, call.model, call.stream, call.extensions)
        plan = await self._chat.plan(creq)
        if not call.stream:
            answer = await self._chat.complete(creq, plan)
            plan_headers(req, resp, plan)
            timings = Timings(total_ns=ns(time.perf_counter() - creq.received_at), eval_ns=ns(answer.upstream_ms / 1000))
            resp.data = orjson.dumps(reply(answer.body, chat=self._chat_shape, model=call.model,
                                           created_at=timestamp(time.time()), timings=timings))
            overhead(resp, creq, answer.upstream_ms)
            return
        chunks = await self._chat.open_chunks(creq, plan)
        plan_headers(req, resp, plan)
        stream_head(resp, NDJSON)
        overhead(resp, creq, chunks.upstream_ms)
        req.context.defer_log = True
        encoder = ReplyStream(chat=self._chat_shape, model=call.model, started=creq.received_at)
        resp.stream = stream_body(req, chunks, lambda c: _lines(c, encoder), self._finish)


async def _lines(chunks: AsyncIterator[dict[str, Any]], encoder: ReplyStream) -> AsyncIterator[bytes]:
    async for chunk in chunks:  # usage chunk included: the last line reports the counts
        if lines := encoder.feed(chunk):
            yield _ndjson(lines)
    yield _ndjson(encoder.finish())


def _ndjson(lines: Sequence[Mapping[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


class Tags:
    """GET /api/tags: the models `/v1/models` lists (those the caller's key may use), in Ollama's shape."""

    def __init__(self, directory: ModelDirectory) -> None:
        self._directory = directory

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = orjson.dumps(tags_response(visible_models(req, await self._directory.listing())))
        resp.content_type = falcon.MEDIA_JSON


class Show:
    """POST /api/show: what the catalog knows about one model."""

    def __init__(self, directory: ModelDirectory, router: ModelRouter) -> None:
        self._directory = directory
        self._router = router

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req)
        name = (body.get("model") or body.get("name")) if isinstance(body, dict) else None  # older clients: name
        if not isinstance(name, str) or not name:
            raise WireError("model is required", "model")
        model = await self._directory.get(name) if may_see_model(req, name) else None
        if model is None:
            raise ModelNotFound(name)
        entry = self._router.entries.get(name)
        resp.data = orjson.dumps(show_response(model, entry.tags if entry else ()))
        resp.content_type = falcon.MEDIA_JSON


class Version:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = orjson.dumps(version_response())
        resp.content_type = falcon.MEDIA_JSON


class Embed:
    """POST /api/embed (`legacy=False`) or /api/embeddings (one prompt, one vector)."""

    def __init__(self, service: EmbeddingService, *, legacy: bool, max_inputs: int) -> None:
        self._service = service
        self._legacy = legacy
        self._max_inputs = max_inputs

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req)
        if self._legacy:
            inputs, dimensions = [parse_embeddings(body)], None
        else:
            call = parse_embed(body, self._max_inputs)
            inputs, dimensions = call.inputs, call.dimensions
        result = await self._service.embed(inputs, correlation_id=req.context.cid, dimensions=dimensions,
                                           key=caller_of(req).name)
        resp.set_header(PATH_HEADER, result.path)
        if self._legacy:
            resp.data = orjson.dumps(embeddings_response(result.vectors[0]))
        else:
            resp.data = orjson.dumps(embed_response(result.vectors, model=result.model, tokens=result.tokens,
                                                    total_ns=ns(time.perf_counter() - req.context.started)))
        resp.content_type = falcon.MEDIA_JSON


def add_routes(app: falcon.asgi.App[Any, Any], chat: ChatService, directory: ModelDirectory, router: ModelRouter,
               embeddings: EmbeddingService, *, max_inputs: int,
               finish: Callable[[falcon.asgi.Request, int], None]) -> None:
    for path, chat_shape in (("/api/chat", True), ("/api/generate", False)):
        app.add_route(path, Generation(chat, chat_shape=chat_shape, finish=finish))
    app.add_route("/api/tags", Tags(directory))
    app.add_route("/api/show", Show(directory, router))
    app.add_route("/api/version", Version())
    for path, legacy in (("/api/embed", False), ("/api/embeddings", True)):
        app.add_route(path, Embed(embeddings, legacy=legacy, max_inputs=max_inputs))
