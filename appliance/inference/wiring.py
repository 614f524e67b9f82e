"""Composition of inference for the gateway: which embedder and reranker it uses, and their hooks.

Without `APPLIANCE_INFERENCE_URL`: the in-process models. With it: the gRPC client with
per-call fallback to the in-process models (loaded at start too, so a fallback costs no
load). Nothing here does I/O until the start-up hook runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.config import ConfigError, Settings
from appliance.domain.breaker import Breaker
from appliance.domain.ports import Reranker
from appliance.feature import Feature
from appliance.inference.breaker import inference_breaker
from appliance.inference.embedder import TokenEmbedder
from appliance.inference.fallback import Fallback, FallbackEmbedder, FallbackReranker
from appliance.inference.grpc_client import GrpcInference
from appliance.inference.lazy import LazyEmbedder, LazyReranker, LocalModelsLoader
from appliance.inference.model_files import ModelFilesMissing


class Inference:
    """The gateway's inference components: `embedder` and `reranker` are what callers use."""

    def __init__(self, settings: Settings) -> None:
        try:
            self.loader = LocalModelsLoader(settings.knowledge)
        except ModelFilesMissing as exc:
            raise ConfigError(f"config error: {exc}") from exc
        local_embedder = LazyEmbedder(self.loader)
        local_reranker = LazyReranker(self.loader)
        self.remote: GrpcInference | None = None
        self.breaker: Breaker | None = None
        self.embedder: TokenEmbedder = local_embedder
        self.reranker: Reranker = local_reranker
        if settings.inference_url:
            cfg = settings.inference
            self.remote = GrpcInference(settings.inference_url, deadline_s=cfg.deadline_s,
                                        max_message_bytes=cfg.max_message_bytes)
            self.breaker = inference_breaker(cfg.breaker_cooldown_s)
            fallback = Fallback(self.remote, self.breaker)
            self.embedder = FallbackEmbedder(fallback, local_embedder)
            self.reranker = FallbackReranker(fallback, local_reranker)

    async def start(self) -> None:
        await self.loader.preload()

    async def close(self) -> None:
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
        return status

    def feature(self) -> Feature:
        return Feature("inference", start=self.start, close=self.close, readiness={"inference": self.readiness})
