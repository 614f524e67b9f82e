"""Per-call fallback: try the gRPC service, serve in process when it cannot answer.

The caller sees the same vectors either way (the service runs the same model files); only
the `appliance_inference_*` metrics and `served_path` (read by the HTTP layer for the
`x-appliance-inference` header) tell the paths apart. A breaker keeps a dead service from
costing a timeout on every call for `breaker_cooldown_s`.

The local side is lazy (`inference/lazy.py`): it loads its model on the first call that
falls back, not before, and token counts, `dimensions` and the tokenizer never need it, so
a worker whose service answers holds no model.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Final, TypeVar

import numpy as np
from tokenizers import Tokenizer

from appliance.domain.breaker import Breaker
from appliance.domain.errors import InvalidRequest
from appliance.domain.ports import Reranker, RerankScore
from appliance.inference.embedder import TokenEmbedder
from appliance.inference.grpc_client import GrpcInference, RemoteUnavailable
from appliance.inference.lazy import PromptEncoderLike
from appliance.inference.metrics import CALLS, FALLBACKS

log = logging.getLogger(__name__)
T = TypeVar("T")

#: "grpc" or "local" after an embed/rerank call in this context; None before any.
served_path: Final[ContextVar[str | None]] = ContextVar("served_path", default=None)


class Fallback:
    """`overload_falls_back=False` (this host's own service): a full service is not a dead
    one. The call gets the 503 a full local queue would give, instead of loading a model
    into the worker to run on the cores the service is already using."""

    def __init__(self, remote: GrpcInference, breaker: Breaker, *, overload_falls_back: bool = True) -> None:
        self.remote = remote
        self.breaker = breaker
        self.overload_falls_back = overload_falls_back

    async def call(self, op: str, remote: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        if self.breaker.allow():
            try:
                result = await remote()
            except RemoteUnavailable as exc:
                if exc.reason == "overloaded" and not self.overload_falls_back:
                    self.breaker.success()  # it answered
                    log.warning("inference %s refused: %s", op, exc.message, extra={"op": op, "reason": exc.reason})
                    raise
                self.breaker.failure()
                FALLBACKS.labels(op, exc.reason).inc()
                log.warning("inference %s served in process: %s", op, exc.message,
                            extra={"op": op, "reason": exc.reason})
            except InvalidRequest:
                self.breaker.success()  # it answered
                raise
            except BaseException:
                self.breaker.abandon()  # cancelled: no verdict, let the next call probe
                raise
            else:
                self.breaker.success()
                CALLS.labels(op, "grpc").inc()
                served_path.set("grpc")
                return result
        else:
            FALLBACKS.labels(op, "breaker_open").inc()
        result = await local()
        CALLS.labels(op, "local").inc()
        served_path.set("local")
        return result


class FallbackEmbedder:
    """`TokenEmbedder` over the gRPC service with the in-process embedder behind it."""

    def __init__(self, fallback: Fallback, local: TokenEmbedder) -> None:
        self.fallback = fallback
        self.local = local
        self.model_id = local.model_id

    dimensions: int  # the in-process model's, looked up on access (see __getattr__)

    def __getattr__(self, name: str) -> int:
        if name == "dimensions":
            return self.local.dimensions
        raise AttributeError(name)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.local.tokenizer

    @property
    def max_seq_len(self) -> int:
        return self.local.max_seq_len

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        async def remote() -> list[list[float]]:
            return self._checked(await self.fallback.remote.embed_array(texts)).tolist()  # type: ignore[no-any-return]

        return await self.fallback.call("embed", remote, lambda: self.local.embed(texts))

    def _checked(self, vectors: np.ndarray) -> np.ndarray:
        if vectors.ndim == 2 and vectors.shape[1] != self.dimensions:
            raise RemoteUnavailable(f"inference service returns {vectors.shape[1]}-dimensional vectors, "
                                    f"the in-process model {self.dimensions} (different models?)", "mismatch")
        return vectors

    async def count_tokens(self, texts: Sequence[str]) -> int:
        # The tokenizer is in process on both paths: counting never needs the service.
        return await self.local.count_tokens(texts)

    async def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        return await self.fallback.call("embed_tokens", lambda: self.fallback.remote.token_vectors(texts),
                                        lambda: self.local.token_vectors(texts))

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        async def remote() -> tuple[np.ndarray, list[np.ndarray]]:
            pooled, tokens = await self.fallback.remote.embed_with_tokens(texts)
            return self._checked(pooled), tokens

        return await self.fallback.call("embed_with_tokens", remote, lambda: self.local.embed_with_tokens(texts))


class FallbackReranker:
    def __init__(self, fallback: Fallback, local: Reranker) -> None:
        self.fallback = fallback
        self.local = local
        self.model_id = local.model_id

    async def rerank(self, query: str, documents: Sequence[str]) -> list[RerankScore]:
        if not documents:
            return []
        return await self.fallback.call("rerank", lambda: self.fallback.remote.rerank(query, documents),
                                        lambda: self.local.rerank(query, documents))


class FallbackPromptEncoder:
    """The semantic router's `PromptEncoder` over the host's service, with an in-process
    encoder behind it (a `lazy.LazyPromptEncoder`: none is held until a call falls back).

    Give it a `Fallback` with a breaker of its own: a service without the encoder's
    packages (FAILED_PRECONDITION) must not send the embeddings in process too.
    `deadline_s` bounds a decision's remote call by the router's budget instead of the
    client's; the cards (many texts, once at start, on a service that may still be loading
    the encoder) keep the client's deadline: under the budget's few milliseconds they timed
    out and every worker loaded an encoder of its own."""

    def __init__(self, fallback: Fallback, local: PromptEncoderLike, *, deadline_s: float | None = None) -> None:
        self.fallback = fallback
        self.local = local
        self.model_id = local.model_id
        self.deadline_s = deadline_s

    async def encode(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._call(texts, cards=False)

    async def encode_cards(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._call(texts, cards=True)

    async def _call(self, texts: Sequence[str], *, cards: bool) -> list[list[float]]:
        if not texts:
            return []

        async def remote() -> list[list[float]]:
            vectors = await self.fallback.remote.encode_prompts(
                texts, cards=cards, deadline_s=None if cards else self.deadline_s)
            return vectors.tolist()  # type: ignore[no-any-return]

        local = self.local.encode_cards if cards else self.local.encode
        return await self.fallback.call("encode_prompts", remote, lambda: local(texts))
