"""gRPC servicers for `proto/inference.proto`, over the same `LocalModels` as the gateway.

Input is validated here (INVALID_ARGUMENT with a message naming the field); model calls
go through the models' bounded executor, whose refusal becomes RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TypeVar

import grpc

from appliance.config import InferenceSettings
from appliance.domain.errors import DependencyUnavailable
from appliance.inference.executor import InferenceBusy
from appliance.inference.gen import inference_pb2 as pb
from appliance.inference.gen import inference_pb2_grpc as pb_grpc
from appliance.inference.local import LocalModels
from appliance.inference.wire import pack

T = TypeVar("T")
SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[n].full_name
                      for n in ("EmbeddingService", "RerankService"))


class Limits:
    def __init__(self, settings: InferenceSettings) -> None:
        self.max_inputs = settings.max_inputs
        self.max_text_chars = settings.max_text_chars

    async def invalid(self, context: grpc.aio.ServicerContext, message: str) -> NoReturn:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        raise AssertionError("abort returned")  # pragma: no cover

    async def texts(self, context: grpc.aio.ServicerContext, field: str, texts: Sequence[str]) -> list[str]:
        if not texts:
            await self.invalid(context, f"{field}: at least one text is required")
        if len(texts) > self.max_inputs:
            await self.invalid(context, f"{field}: {len(texts)} inputs exceed the limit of {self.max_inputs}")
        for i, text in enumerate(texts):
            if len(text) > self.max_text_chars:
                await self.invalid(context, f"{field}[{i}]: {len(text)} characters exceed the limit of "
                                            f"{self.max_text_chars}")
        return list(texts)


async def _guarded(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except InferenceBusy as exc:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)
        raise  # pragma: no cover
    except DependencyUnavailable as exc:  # the model itself failed
        await context.abort(grpc.StatusCode.INTERNAL, exc.message)
        raise  # pragma: no cover


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, models: LocalModels, limits: Limits) -> None:
        self._models = models
        self._limits = limits

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        texts = await self._limits.texts(context, "texts", request.texts)
        embedder = self._models.embedder
        vectors = await _guarded(context, lambda: embedder.embed_array(texts))
        counts = await _guarded(context, lambda: embedder.executor.run(
            lambda: embedder.encoder.tokenizer.counts(texts)))
        return pb.EmbedResponse(model_id=embedder.model_id, dimensions=embedder.dimensions,
                                vectors=pack(vectors), token_counts=counts)

    async def EmbedTokens(self, request: pb.EmbedTokensRequest,
                          context: grpc.aio.ServicerContext) -> pb.EmbedTokensResponse:
        texts = await self._limits.texts(context, "texts", request.texts)
        embedder = self._models.embedder
        tokens = await _guarded(context, lambda: embedder.token_vectors(texts))
        return pb.EmbedTokensResponse(
            model_id=embedder.model_id, dimensions=embedder.dimensions,
            texts=[pb.TokenVectors(tokens=t.shape[0], data=pack(t)) for t in tokens])


class RerankServicer(pb_grpc.RerankServiceServicer):
    def __init__(self, models: LocalModels, limits: Limits) -> None:
        self._models = models
        self._limits = limits

    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.RerankResponse:
        docs = await self._limits.texts(context, "documents", request.documents)
        await self._limits.texts(context, "query", [request.query])
        reranker = self._models.reranker
        scores = await _guarded(context, lambda: reranker.rerank(request.query, docs))
        return pb.RerankResponse(model_id=reranker.model_id, scores=[s.score for s in scores])


def add_servicers(server: grpc.aio.Server, models: LocalModels, settings: InferenceSettings) -> None:
    limits = Limits(settings)
    pb_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(models, limits), server)  # type: ignore[no-untyped-call]
    pb_grpc.add_RerankServiceServicer_to_server(RerankServicer(models, limits), server)  # type: ignore[no-untyped-call]
