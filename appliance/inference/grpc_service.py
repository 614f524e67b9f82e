"""gRPC servicers for `proto/inference.proto`, over the same `LocalModels` as the gateway, and
the semantic router's prompt encoder.

Input is validated here (INVALID_ARGUMENT with a message naming the field); model calls
go through the models' bounded executor, whose refusal becomes RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

import grpc

from appliance.config import InferenceSettings
from appliance.domain.errors import DependencyUnavailable
from appliance.inference.executor import BoundedExecutor, InferenceBusy
from appliance.inference.gen import inference_pb2 as pb
from appliance.inference.gen import inference_pb2_grpc as pb_grpc
from appliance.inference.local import LocalModels
from appliance.inference.model_files import ModelFilesMissing
from appliance.inference.wire import pack

if TYPE_CHECKING:
    from appliance.inference.prompt_encoder import PromptVectors

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[n].full_name
                      for n in ("EmbeddingService", "RerankService", "PromptEncoderService"))


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
        encoder = embedder.encoder
        if len(texts) <= encoder.batch_size:  # one thread hand-off per call, not two
            vectors, counts = await _guarded(context, lambda: embedder.executor.run(
                lambda: (encoder.embed(texts), encoder.tokenizer.counts(texts))))
        else:
            vectors = await _guarded(context, lambda: embedder.embed_array(texts))
            counts = await _guarded(context, lambda: embedder.executor.run(lambda: encoder.tokenizer.counts(texts)))
        return pb.EmbedResponse(model_id=embedder.model_id, dimensions=embedder.dimensions,
                                vectors=pack(vectors), token_counts=counts)

    async def EmbedTokens(self, request: pb.EmbedTokensRequest,
                          context: grpc.aio.ServicerContext) -> pb.EmbedTokensResponse:
        texts = await self._limits.texts(context, "texts", request.texts)
        embedder = self._models.embedder
        pooled = b""
        if request.pooled:
            vectors, tokens = await _guarded(context, lambda: embedder.embed_with_tokens(texts))
            pooled = pack(vectors)
        else:
            tokens = await _guarded(context, lambda: embedder.token_vectors(texts))
        return pb.EmbedTokensResponse(
            model_id=embedder.model_id, dimensions=embedder.dimensions, pooled=pooled,
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


def _load_prompt_vectors() -> PromptVectors:
    # Imported here: the router's models and their packages, only when a router asks.
    from appliance.inference.prompt_encoder import load_prompt_vectors

    return load_prompt_vectors()


class PromptServicer(pb_grpc.PromptEncoderServiceServicer):
    """The semantic router's prompt encoder (inference/prompt_encoder.py), once for every
    worker of the host. Loaded on the first call (concurrent first calls wait for the one
    load; a failed load is tried again by the next call) or by `preload`. Its own executor:
    a routing decision must not queue behind an embedding batch."""

    def __init__(self, limits: Limits, executor: BoundedExecutor,
                 load: Callable[[], PromptVectors] = _load_prompt_vectors) -> None:
        self._limits = limits
        self.executor = executor
        self._load = load
        self._vectors: PromptVectors | None = None
        self._loading: asyncio.Future[PromptVectors] | None = None

    async def vectors(self) -> PromptVectors:
        if self._vectors is not None:
            return self._vectors
        if self._loading is None:
            started = time.monotonic()
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._load))
            self._loading.add_done_callback(lambda f: _loaded(f, started))
        loading = self._loading
        try:
            self._vectors = await asyncio.shield(loading)
        except BaseException:
            if self._loading is loading and loading.done():  # failed, not merely our caller cancelled
                self._loading = None
            raise
        return self._vectors

    async def preload(self) -> None:
        """Load now (for a background task at start); a failure is logged, and tried again
        by the next call."""
        with contextlib.suppress(Exception):
            await self.vectors()

    async def EncodePrompts(self, request: pb.EncodePromptsRequest,
                            context: grpc.aio.ServicerContext) -> pb.EncodePromptsResponse:
        texts = await self._limits.texts(context, "texts", request.texts)
        try:
            vectors = await self.vectors()
        except ModelFilesMissing as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"prompt encoder: {exc}")
            raise  # pragma: no cover
        array = await _guarded(context, lambda: self.executor.run(
            lambda: vectors.embed(texts, cards=request.cards)))
        return pb.EncodePromptsResponse(model_id=vectors.model_id, dimensions=vectors.dimensions,
                                        vectors=pack(array))


def _loaded(future: asyncio.Future[PromptVectors], started: float) -> None:
    if future.cancelled():
        return
    if future.exception() is not None:
        log.warning("prompt encoder not loaded: %s", future.exception())
    else:
        log.info("prompt encoder loaded", extra={"model": future.result().model_id,
                                                 "took_s": round(time.monotonic() - started, 3)})


def add_servicers(server: grpc.aio.Server, models: LocalModels, settings: InferenceSettings) -> PromptServicer:
    """Embedding, rerank and prompt-encoder servicers on `server`; the last is returned (its
    loading and executor are the caller's to start and close)."""
    limits = Limits(settings)
    prompts = PromptServicer(limits, BoundedExecutor(1, settings.max_concurrency, name="prompts"))
    pb_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(models, limits), server)  # type: ignore[no-untyped-call]
    pb_grpc.add_RerankServiceServicer_to_server(RerankServicer(models, limits), server)  # type: ignore[no-untyped-call]
    pb_grpc.add_PromptEncoderServiceServicer_to_server(prompts, server)  # type: ignore[no-untyped-call]
    return prompts
