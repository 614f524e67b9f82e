"""POST /v1/embeddings (OpenAI) and POST /v1/rerank (Cohere/Jina shape)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi
import orjson

from appliance.api.errors import read_json
from appliance.domain.embeddings import EmbeddingService
from appliance.domain.errors import DependencyUnavailable
from appliance.inference.fallback import served_path
from appliance.openai.embeddings import (
    embeddings_response,
    parse_embeddings,
    parse_rerank,
    rerank_response,
)

if TYPE_CHECKING:
    from appliance.services import Services

PATH_HEADER = "x-appliance-inference"


class EmbeddingsResource:
    def __init__(self, service: EmbeddingService, *, max_inputs: int, max_body_bytes: int) -> None:
        self._service = service
        self._max_inputs = max_inputs
        self._max_body = max_body_bytes

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        request = parse_embeddings(await read_json(req, self._max_body), self._max_inputs)
        req.context.model = request.model
        served_path.set(None)
        result = await self._service.embed(request.inputs, correlation_id=req.context.cid,
                                           dimensions=request.dimensions)
        resp.set_header(PATH_HEADER, result.path)
        resp.data = orjson.dumps(embeddings_response(result.vectors, result.model, result.tokens,
                                                     request.encoding_format))
        resp.content_type = falcon.MEDIA_JSON


class RerankResource:
    def __init__(self, service: EmbeddingService, *, max_documents: int, max_body_bytes: int) -> None:
        self._service = service
        self._max_documents = max_documents
        self._max_body = max_body_bytes

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        request = parse_rerank(await read_json(req, self._max_body), self._max_documents)
        served_path.set(None)
        ranked = await self._service.rerank(request.query, request.documents, request.top_n)
        resp.set_header(PATH_HEADER, self._service.served_by())
        resp.data = orjson.dumps(rerank_response(
            req.context.cid or uuid.uuid4().hex, self._service.reranker.model_id,
            [(s.index, s.score) for s in ranked], request.documents if request.return_documents else None))
        resp.content_type = falcon.MEDIA_JSON


class _Unavailable:
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        raise DependencyUnavailable("Embeddings are not configured on this gateway")


def embedding_service(services: Services) -> EmbeddingService | None:
    """The embedding service over the worker's embedder and reranker; None without them."""
    if services.embedder is None or services.reranker is None:
        return None
    return EmbeddingService(services.embedder, services.reranker, lambda: services.recorder,
                            served_by=served_path.get)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    service = embedding_service(services)
    if service is None:
        app.add_route("/v1/embeddings", _Unavailable())
        app.add_route("/v1/rerank", _Unavailable())
        return
    settings = services.settings
    app.add_route("/v1/embeddings", EmbeddingsResource(
        service, max_inputs=settings.knowledge.embed_max_inputs, max_body_bytes=settings.max_body_bytes))
    app.add_route("/v1/rerank", RerankResource(
        service, max_documents=settings.knowledge.rerank_max_documents, max_body_bytes=settings.max_body_bytes))
