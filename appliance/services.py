"""Composition of one worker's services: backends, routing, chat, and what other features add.

`build_services` is synchronous and does no I/O; `Services.start()` opens connections on the
running loop (ASGI lifespan start-up) and `aclose()` releases them in reverse order.
A feature that needs start-up work appends to `starters`; its shutdown to `closers`; its
readiness probe to `readiness`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from appliance.api.health import ReadinessCheck
from appliance.api.metrics import MetricsRecorder
from appliance.backends.openai_compat import HttpPool, OpenAICompatBackend
from appliance.config import Settings, read_secret
from appliance.domain.chat import ChatService
from appliance.domain.models import ModelDirectory
from appliance.domain.ports import ChatBackend, Embedder, Reranker
from appliance.domain.records import FanoutRecorder, Recorder
from appliance.domain.routing import ModelEntry, ModelRouter, RouteRule
from appliance.events.wiring import add_events
from appliance.inference.wiring import add_inference
from appliance.rag.wiring import add_knowledge

log = logging.getLogger(__name__)


class OrjsonCodec:
    """The hot path's JSON codec (orjson is 3-10x faster than the standard library here)."""

    loads = staticmethod(orjson.loads)
    dumps = staticmethod(orjson.dumps)


@dataclass
class Services:
    settings: Settings
    router: ModelRouter
    backends: dict[str, ChatBackend]
    directory: ModelDirectory
    chat: ChatService
    recorders: list[Recorder]
    embedder: Embedder | None = None
    reranker: Reranker | None = None
    knowledge: Any = None
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    starters: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    collectors: list[Any] = field(default_factory=list)  # extra Prometheus collectors for /metrics

    @property
    def recorder(self) -> Recorder:
        return self.chat.recorder

    def add_recorder(self, recorder: Recorder) -> None:
        self.recorders.append(recorder)
        self.chat.recorder = FanoutRecorder(*self.recorders)

    async def start(self) -> None:
        for start in self.starters:
            await start()

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                log.exception("error while closing a service")


def build_services(settings: Settings) -> Services:
    catalog = settings.catalog
    pool = HttpPool(max_connections=settings.upstream_max_connections)
    backends: dict[str, ChatBackend] = {
        b.name: OpenAICompatBackend(
            b.name, b.base_url, pool,
            api_key=read_secret(b.api_key_env, b.api_key_credential),
            headers=b.headers,
            timeout_s=b.timeout_s or settings.upstream_timeout_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
        )
        for b in catalog.backends
    }
    router = ModelRouter(
        [ModelEntry(m.id, m.backend, m.upstream_id or m.id, m.owned_by or m.backend, m.context_length,
                    m.description, m.tags, m.price_input_per_mtok, m.price_output_per_mtok) for m in catalog.models],
        [RouteRule(r.pattern, r.backend) for r in catalog.routes],
    )
    directory = ModelDirectory(router, backends, ttl_s=settings.models_cache_ttl_s,
                               discover={b.name: b.discover for b in catalog.backends})
    recorders: list[Recorder] = [MetricsRecorder()]
    chat = ChatService(router, backends, directory, OrjsonCodec(), recorder=FanoutRecorder(*recorders),
                       default_top_k=settings.knowledge.rag_top_k)
    services = Services(settings, router, backends, directory, chat, recorders)
    services.starters.append(pool.start)
    services.closers.append(pool.close)
    add_inference(services)
    add_knowledge(services)
    add_events(services)
    return services
