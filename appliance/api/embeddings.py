"""POST /v1/embeddings (OpenAI) and POST /v1/rerank (Cohere/Jina shape)."""

from __future__ import annotations

import uuid
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.api.access import caller_of, check_model
from appliance.api.body import read_json
from appliance.domain.embeddings import EmbeddingService
from appliance.openai.embeddings import (
    embeddings_response,
    parse_embeddings,
    parse_rerank,
    rerank_response,
)

PATH_HEADER = "x-appliance-inference"


class EmbeddingsResource:
    def __init__(self, service: EmbeddingService, *, max_inputs: int) -> None:
        self._service = service
        self._max_inputs = max_inputs

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        request = parse_embeddings(await read_json(req), self._max_inputs)
        req.context.model = request.model
        if request.model:
            check_model(req, request.model)
        result = await self._service.embed(request.inputs, correlation_id=req.context.cid, key=caller_of(req).name,
                                           dimensions=request.dimensions)
        resp.set_header(PATH_HEADER, result.path)
        resp.data = orjson.dumps(embeddings_response(result.vectors, result.model, result.tokens,
                                                     request.encoding_format))
        resp.content_type = falcon.MEDIA_JSON


class RerankResource:
    def __init__(self, service: EmbeddingService, *, max_documents: int) -> None:
        self._service = service
        self._max_documents = max_documents

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        request = parse_rerank(await read_json(req), self._max_documents)
        if request.model:
            check_model(req, request.model)
        ranked = await self._service.rerank(request.query, request.documents, request.top_n)
        resp.set_header(PATH_HEADER, self._service.served_by())
        resp.data = orjson.dumps(rerank_response(
            req.context.cid or uuid.uuid4().hex, self._service.reranker.model_id,
            [(s.index, s.score) for s in ranked], request.documents if request.return_documents else None))
        resp.content_type = falcon.MEDIA_JSON


def add_routes(app: falcon.asgi.App[Any, Any], service: EmbeddingService, *, max_inputs: int,
               max_documents: int) -> None:
    app.add_route("/v1/embeddings", EmbeddingsResource(service, max_inputs=max_inputs))
    app.add_route("/v1/rerank", RerankResource(service, max_documents=max_documents))
