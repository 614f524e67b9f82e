"""Composition of inference for the gateway: which embedder and reranker it uses, and their hooks.

Without `APPLIANCE_INFERENCE_URL`: the in-process models, preloaded in the background at
start. With it: the gRPC client with per-call fallback to the in-process models, which load
only when a call falls back and are released once they sit unused with the service
answering again (`local_release_s`). `serve` sets it to its host service's unix socket
(inference/host_service.py); a worker then waits at start, up to `host_service_wait_s`,
until that service answers, so no call falls back while both start. Nothing here does
I/O until the start-up hook runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from appliance.config import ConfigError, Settings
from appliance.domain.breaker import Breaker, State
from appliance.domain.errors import DependencyUnavailable
from appliance.domain.ports import Reranker
from appliance.domain.semantic_router import PromptEncoder
from appliance.feature import Feature
from appliance.inference.breaker import inference_breaker
from appliance.inference.embedder import TokenEmbedder
from appliance.inference.executor import BoundedExecutor
from appliance.inference.fallback import (
    Fallback,
    FallbackEmbedder,
    FallbackPromptEncoder,
    FallbackReranker,
)
from appliance.inference.grpc_client import GrpcInference, is_unix
from appliance.inference.lazy import (
    LazyEmbedder,
    LazyPromptEncoder,
    LazyReranker,
    LocalModelsLoader,
)
from appliance.inference.model_files import ModelFilesMissing
from appliance.inference.prompt_encoder import (
    LocalPromptEncoder,
    PromptVectors,
    load_prompt_vectors,
)

log = logging.getLogger(__name__)


class Inference:
    """The gateway's inference components: `embedder` and `reranker` are what callers use."""

    def __init__(self, settings: Settings) -> None:
        try:
            self.loader = LocalModelsLoader(settings.knowledge, settings.models_dir)
        except ModelFilesMissing as exc:
            raise ConfigError(f"config error: {exc}") from exc
        cfg = settings.inference
        local_embedder = LazyEmbedder(self.loader)
        local_reranker = LazyReranker(self.loader)
        self.remote: GrpcInference | None = None
        self.breaker: Breaker | None = None
        self.embedder: TokenEmbedder = local_embedder
        self.reranker: Reranker = local_reranker
        self._wait_s = 0.0
        self._release_s = cfg.local_release_s
        self._releaser: asyncio.Task[None] | None = None
        if settings.inference_url:
            # A unix socket is this host's service: it does the worker's own work (no short
            # deadline, no fallback when it is merely full) and is back within seconds of a
            # restart (a short cool-down).
            host = is_unix(settings.inference_url)
            self.remote = GrpcInference(settings.inference_url, max_message_bytes=cfg.max_message_bytes,
                                        deadline_s=cfg.host_service_deadline_s if host else cfg.deadline_s)
            self.breaker = inference_breaker(min(cfg.host_service_cooldown_s, cfg.breaker_cooldown_s)
                                             if host else cfg.breaker_cooldown_s)
            self._wait_s = cfg.host_service_wait_s if host else 0.0
            fallback = Fallback(self.remote, self.breaker, overload_falls_back=not host)
            self.embedder = FallbackEmbedder(fallback, local_embedder)
            self.reranker = FallbackReranker(fallback, local_reranker)

    async def start(self) -> None:
        if self.remote is None:
            await self.loader.preload()
            return
        if self._wait_s:
            started = time.monotonic()
            if await self.remote.wait_ready(self._wait_s):
                log.info("inference service answers", extra={"target": self.remote.target,
                                                              "waited_s": round(time.monotonic() - started, 3)})
            else:
                log.warning("inference service not ready; calls are served in process until it answers",
                            extra={"target": self.remote.target, "waited_s": self._wait_s})
        if self._release_s:
            self._releaser = asyncio.create_task(self._release_when_idle())

    async def _release_when_idle(self) -> None:
        """Give back models a fallback loaded, once unused for `local_release_s` while the
        service answers (its breaker closed, or its health check says so: with no traffic
        nothing closes the breaker)."""
        while True:
            await asyncio.sleep(max(self._release_s / 2, 0.05))
            if (self.loader.loaded and self.loader.idle_s() >= self._release_s and await self._answers()
                    and await asyncio.to_thread(self.loader.release, self._release_s)):
                log.info("in-process models released: the inference service answers again")

    async def _answers(self) -> bool:
        assert self.remote is not None and self.breaker is not None
        if self.breaker.state is State.CLOSED:
            return True
        try:
            return await self.remote.health() == "SERVING"
        except DependencyUnavailable:
            return False

    async def close(self) -> None:
        if self._releaser is not None:
            self._releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._releaser
        if self.remote is not None:
            await self.remote.close()
        await asyncio.to_thread(self.loader.close)

    async def readiness(self) -> dict[str, Any]:
        """Always ok (the in-process path serves); says which path is healthy."""
        status: dict[str, Any] = {"ok": True, "model": self.loader.files.model_id, "local_loaded": self.loader.loaded}
        if self.remote is not None and self.breaker is not None:
            try:
                status["grpc"] = await self.remote.health()
            except Exception as exc:  # readiness reports, never raises
                status["grpc"] = f"unreachable: {getattr(exc, 'message', exc)}"
            status["breaker"] = self.breaker.state.name.lower()
            status["service"] = "host" if self.remote.local else "remote"
        return status

    def prompt_encoder(self, deadline_s: float) -> PromptEncoder:
        """The semantic routers' encoder, built once per worker when the catalog has routers:
        over the inference service (this host's, or the remote one) with an in-process one
        behind it, loaded only when a call falls back; in process when there is no service."""
        local = LazyPromptEncoder(lambda: LocalPromptEncoder(load_prompt_vectors(),
                                                             BoundedExecutor(1, 256, name="prompts")),
                                  model_id=PromptVectors.MODEL_ID)
        if self.remote is None:
            return local
        # Its own breaker: a service without the encoder's packages must not send embeddings
        # in process too.
        breaker = inference_breaker(self.breaker.cooldown_s if self.breaker else 30.0, name="prompts")
        return FallbackPromptEncoder(Fallback(self.remote, breaker), local, deadline_s=deadline_s)

    def feature(self) -> Feature:
        return Feature("inference", start=self.start, close=self.close, readiness={"inference": self.readiness})
