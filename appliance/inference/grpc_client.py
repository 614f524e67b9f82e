"""Client of `appliance inference`: the remote half of the Embedder/Reranker ports.

gRPC errors are translated here and nowhere else: INVALID_ARGUMENT -> `InvalidRequest`;
everything that means "the service cannot answer now" (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, CANCELLED, INTERNAL, UNKNOWN, a model/dimension mismatch) ->
`RemoteUnavailable`, a `DependencyUnavailable` whose `reason` the fallback counts.

A grpc.aio channel belongs to the event loop that made it, so the channel is opened on
first use and reopened if a call comes from another loop.

A `unix:` target is this host's own service (`serve` starts one, inference/host_service.py):
its channel reconnects within a second of the service coming back (gRPC's default backoff
grows to two minutes), and `wait_ready` lets a starting worker wait for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance.domain.errors import DependencyUnavailable, InvalidRequest
from appliance.domain.ports import RerankScore
from appliance.inference.gen import inference_pb2 as pb
from appliance.inference.gen import inference_pb2_grpc as pb_grpc
from appliance.inference.wire import VectorShapeError, unpack

T = TypeVar("T")

_REASONS = {grpc.StatusCode.UNAVAILABLE: "unavailable", grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
            grpc.StatusCode.RESOURCE_EXHAUSTED: "overloaded", grpc.StatusCode.CANCELLED: "cancelled",
            grpc.StatusCode.FAILED_PRECONDITION: "precondition"}


class RemoteUnavailable(DependencyUnavailable):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def grpc_target(url: str) -> str:
    """`grpc://host:port`, `http://host:port` or `host:port` -> `host:port`; `unix:PATH` as is."""
    for prefix in ("grpc://", "http://", "dns:///"):
        if url.startswith(prefix):
            return url[len(prefix):].rstrip("/")
    return url.rstrip("/")


def is_unix(url: str) -> bool:
    """A unix socket address: a service on this host."""
    return grpc_target(url).startswith(("unix:", "unix-abstract:"))


# Reconnecting to a unix socket costs a refused connect(): try often (milliseconds).
_UNIX_BACKOFF = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                 ("grpc.max_reconnect_backoff_ms", 1000)]


class GrpcInference:
    """Embed, EmbedTokens, Rerank and EncodePrompts over one channel."""

    def __init__(self, url: str, *, deadline_s: float, max_message_bytes: int,
                 expect_dimensions: int | None = None) -> None:
        self.target = grpc_target(url)
        self.deadline_s = deadline_s
        self.expect_dimensions = expect_dimensions
        self.local = is_unix(url)
        self._options = [("grpc.max_receive_message_length", max_message_bytes),
                         ("grpc.max_send_message_length", max_message_bytes),
                         ("grpc.enable_retries", 0), *(_UNIX_BACKOFF if self.local else [])]
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stubs: dict[str, Any] = {}

    def _stub(self, name: str) -> Any:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            self._loop = loop
            self._stubs = {
                "embed": pb_grpc.EmbeddingServiceStub(self._channel),  # type: ignore[no-untyped-call]
                "rerank": pb_grpc.RerankServiceStub(self._channel),  # type: ignore[no-untyped-call]
                "prompt": pb_grpc.PromptEncoderServiceStub(self._channel),  # type: ignore[no-untyped-call]
                "health": health_pb2_grpc.HealthStub(self._channel),
            }
        return self._stubs[name]

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(exc.details() or "invalid input") from exc
            reason = _REASONS.get(code, "error")
            raise RemoteUnavailable(f"inference service {self.target}: {what} failed: {code.name} "
                                    f"{exc.details() or ''}".rstrip(), reason) from exc

    def _check_dims(self, dims: int) -> None:
        if self.expect_dimensions is not None and dims != self.expect_dimensions:
            raise RemoteUnavailable(f"inference service {self.target} returns {dims}-dimensional vectors, "
                                    f"expected {self.expect_dimensions} (different model?)", "mismatch")

    def _vectors(self, data: bytes, rows: int, dims: int) -> np.ndarray:
        self._check_dims(dims)
        return self._unpacked(data, rows, dims)

    def _unpacked(self, data: bytes, rows: int, dims: int) -> np.ndarray:
        try:
            return unpack(data, rows, dims)
        except VectorShapeError as exc:
            raise RemoteUnavailable(f"inference service {self.target}: {exc}", "error") from exc

    async def embed_response(self, texts: Sequence[str]) -> pb.EmbedResponse:
        request = pb.EmbedRequest(texts=list(texts))
        reply: pb.EmbedResponse = await self._call(
            "Embed", lambda: self._stub("embed").Embed(request, timeout=self.deadline_s))
        return reply

    async def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        reply = await self.embed_response(texts)
        return self._vectors(reply.vectors, len(texts), reply.dimensions)

    async def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        request = pb.EmbedTokensRequest(texts=list(texts))
        reply: pb.EmbedTokensResponse = await self._call(
            "EmbedTokens", lambda: self._stub("embed").EmbedTokens(request, timeout=self.deadline_s))
        return [self._vectors(t.data, t.tokens, reply.dimensions) for t in reply.texts]

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """EmbedTokens with `pooled` set: both from one model pass on the service. A service
        from before the field answers without `pooled`, which fails here (and falls back)."""
        request = pb.EmbedTokensRequest(texts=list(texts), pooled=True)
        reply: pb.EmbedTokensResponse = await self._call(
            "EmbedTokens", lambda: self._stub("embed").EmbedTokens(request, timeout=self.deadline_s))
        pooled = self._vectors(reply.pooled, len(texts), reply.dimensions)
        return pooled, [self._vectors(t.data, t.tokens, reply.dimensions) for t in reply.texts]

    async def rerank(self, query: str, documents: Sequence[str]) -> list[RerankScore]:
        request = pb.RerankRequest(query=query, documents=list(documents))
        reply: pb.RerankResponse = await self._call(
            "Rerank", lambda: self._stub("rerank").Rerank(request, timeout=self.deadline_s))
        if len(reply.scores) != len(documents):
            raise RemoteUnavailable(f"inference service {self.target}: {len(reply.scores)} scores for "
                                    f"{len(documents)} documents", "error")
        return [RerankScore(index=i, score=float(s)) for i, s in enumerate(reply.scores)]

    async def encode_prompts(self, texts: Sequence[str], *, cards: bool = False,
                             deadline_s: float | None = None) -> np.ndarray:
        """The semantic router's prompt vectors, one row per text (L2-normalised); `cards`:
        the texts are a router's cards, read whole. `deadline_s` overrides the client's: a
        routing decision has a budget of its own."""
        request = pb.EncodePromptsRequest(texts=list(texts), cards=cards)
        timeout = self.deadline_s if deadline_s is None else deadline_s
        reply: pb.EncodePromptsResponse = await self._call(
            "EncodePrompts", lambda: self._stub("prompt").EncodePrompts(request, timeout=timeout))
        return self._unpacked(reply.vectors, len(texts), reply.dimensions)

    async def health(self, service: str = "") -> str:
        """The health status name (`SERVING`, `NOT_SERVING`, ...) of `service`."""
        request = health_pb2.HealthCheckRequest(service=service)
        reply = await self._call("Health.Check", lambda: self._stub("health").Check(request, timeout=self.deadline_s))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the service to say SERVING (through connection failures
        while it starts); False when it did not."""
        deadline = time.monotonic() + timeout_s
        request = health_pb2.HealthCheckRequest(service="")
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = await self._stub("health").Check(request, timeout=left, wait_for_ready=True)
            except grpc.aio.AioRpcError:
                if deadline - time.monotonic() > 0.1:
                    await asyncio.sleep(0.1)  # up, health not set yet (NOT_FOUND): ask again
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return True
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return False

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            if self._loop is asyncio.get_running_loop():
                await channel.close()
