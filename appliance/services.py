"""The composition root of one gateway worker: every feature built from its inputs, in order.

    backends, router, directory     the catalog's backends (with their capabilities) and names
    upstreams                       each backend's breaker, outstanding requests and loaded models
    metrics recorder                counts chats, tokens and cost for /metrics
    inference                       embedder + reranker (in process, or gRPC with fallback)
    events                          the spool recorder (when NATS is configured)
    access                          keys, allowlists, limits, budgets, audit (docs/access.md); settles from outcomes
    recorder                        metrics + events, fanned out; handed to everything that records
    knowledge                       store + service (when PostgreSQL is configured), RAG's context
    routers                         `[[routers]]`: virtual models choosing a candidate by its card
    embeddings                      the embedding/rerank service over inference
    parsers                         the output parser chain's stages per model, the image fetcher
    moderation                      `[moderations]`: the guard model for /v1/moderations and `moderate = "input"`
    chat                            routing, retrieval, the backend call, recording
    token counter                   /v1/messages/count_tokens: the backend's /tokenize, else the gateway's tokenizer
    responses                       stored Responses (when PostgreSQL is configured) for /v1/responses

`build_services` is synchronous and does no I/O. Each wiring module returns what it built
and a `Feature` (start/close hooks, readiness probes, metric collectors); `Services.start()`
runs the hooks in the order above on the worker's loop, `aclose()` in reverse. Nothing below
this module imports it (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from appliance.access.wiring import build_access
from appliance.api.errors import status_of
from appliance.api.metrics import MetricsRecorder, report_backend_breaker
from appliance.api.moderation_metrics import count_verdict
from appliance.api.parser_metrics import count_parser_event
from appliance.backends.capabilities import capabilities_of
from appliance.backends.loaded_poll import LoadedModelPoll
from appliance.backends.openai_compat import HttpPool, OpenAICompatBackend, UpstreamLimits
from appliance.backends.parser_wiring import build_parsers
from appliance.config import Settings, read_secret
from appliance.db.responses_wiring import build_responses
from appliance.db.usage import PgUsageReader
from appliance.domain.access import AccessControl, KeyAdmin, open_access
from appliance.domain.activity import ActivityLog
from appliance.domain.attempts import Walk
from appliance.domain.chat import ChatService
from appliance.domain.embeddings import EmbeddingService
from appliance.domain.knowledge import KnowledgeService
from appliance.domain.models import ModelDirectory
from appliance.domain.moderation import Moderation
from appliance.domain.ports import ChatBackend
from appliance.domain.records import FanoutRecorder, Recorder
from appliance.domain.responses import ResponseArchive
from appliance.domain.routing import ModelEntry, ModelRouter, RouteRule
from appliance.domain.semantic_router import Card, SemanticRouter
from appliance.domain.token_count import TokenCounter
from appliance.domain.tracing import NO_TRACER, Tracer
from appliance.domain.upstreams import BreakerPolicy, Upstreams
from appliance.domain.usage import UsageReader
from appliance.events.activity import PgActivityLog
from appliance.events.wiring import build_events
from appliance.feature import Feature, ReadinessCheck
from appliance.inference.fallback import served_path
from appliance.inference.learnt_models import LearntModelFiles
from appliance.inference.prompt_encoder import PROMPT_BLOCKS
from appliance.inference.prompt_trainer import LogisticTrainer
from appliance.inference.wiring import Inference
from appliance.rag.wiring import build_knowledge
from appliance.tracing.wiring import build_tracing

log = logging.getLogger(__name__)


class OrjsonCodec:
    """The hot path's JSON codec: orjson, since the standard library's `json` costs several
    times more per request (docs/benchmarks.md)."""

    loads = staticmethod(orjson.loads)
    dumps = staticmethod(orjson.dumps)


@dataclass(frozen=True, slots=True)
class Services:
    """What `create_app` routes to, and the features whose hooks run with the worker."""

    settings: Settings
    router: ModelRouter
    backends: Mapping[str, ChatBackend]
    directory: ModelDirectory
    chat: ChatService
    embeddings: EmbeddingService
    knowledge: KnowledgeService | None
    features: tuple[Feature, ...]
    activity: ActivityLog | None = None  # the web UI's Activity page (PostgreSQL's event tables)
    usage: UsageReader | None = None     # /admin/usage (the persister's usage tables)
    tracer: Tracer = NO_TRACER           # OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT is set (tracing/)
    # /v1/responses: stored responses (PostgreSQL api_responses), or none without a database
    responses: ResponseArchive = field(default_factory=lambda: ResponseArchive(None))
    # keys, allowlists, limits, budgets (api/access.py); key administration when PostgreSQL is there
    access: AccessControl = field(default_factory=open_access)
    key_admin: KeyAdmin | None = None
    moderation: Moderation | None = None  # /v1/moderations and `moderate = "input"`, when [moderations] is set
    tokens: TokenCounter | None = None    # /v1/messages/count_tokens

    @property
    def readiness(self) -> dict[str, ReadinessCheck]:
        return {name: check for f in self.features for name, check in f.readiness.items()}

    @property
    def collectors(self) -> list[Any]:
        return [c for f in self.features for c in f.collectors]

    async def start(self) -> None:
        for feature in self.features:
            if feature.start is not None:
                await feature.start()

    async def aclose(self) -> None:
        for feature in reversed(self.features):
            if feature.close is None:
                continue
            try:
                await feature.close()
            except Exception:
                log.exception("error while closing a feature", extra={"feature": feature.name})


def build_backends(settings: Settings, pool: HttpPool) -> dict[str, ChatBackend]:
    return {
        b.name: OpenAICompatBackend(
            b.name, b.base_url, pool, capabilities=capabilities_of(b), kind=b.kind,
            api_key=read_secret(b.api_key_env, b.api_key_credential),
            headers=b.headers,
            timeout_s=b.timeout_s or settings.upstream_timeout_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
        )
        for b in settings.catalog.backends
    }


def build_router(settings: Settings) -> ModelRouter:
    catalog = settings.catalog
    return ModelRouter(
        [ModelEntry(m.id, m.backends, m.upstream_id or m.id, m.owned_by or m.backends[0], m.context_length,
                    m.description, m.tags, m.price_input_per_mtok, m.price_output_per_mtok, m.fallbacks, m.examples,
                    parsers=None if m.parsers is None else frozenset(m.parsers))
         for m in catalog.models],
        [RouteRule(r.pattern, r.backend) for r in catalog.routes],
    )


def build_moderation(settings: Settings, router: ModelRouter, backends: Mapping[str, ChatBackend],
                     upstreams: Upstreams) -> Moderation | None:
    """The catalog's `[moderations]` guard, screening the models and routers with `moderate = "input"`."""
    catalog = settings.catalog
    if catalog.moderations is None:
        return None
    walk = Walk(backends, upstreams, dumps=orjson.dumps, bytes_per_token=settings.routing.bytes_per_token,
                clock=time.perf_counter)
    screened = [m.id for m in catalog.models if m.moderate] + [r.id for r in catalog.routers if r.moderate]
    return Moderation(catalog.moderations.model, catalog.moderations.format, router, walk, upstreams,
                      screened=screened, count=count_verdict)


def build_routers(settings: Settings, inference: Inference) -> dict[str, SemanticRouter]:
    """The catalog's `[[routers]]`, each over the models' cards, sharing one prompt encoder."""
    catalog = settings.catalog
    if not catalog.routers:
        return {}
    models = {m.id: m for m in catalog.models}
    budget_s = max(r.budget_ms for r in catalog.routers) / 1000
    encoder = inference.prompt_encoder(deadline_s=budget_s)
    learnt = LearntModelFiles(settings.state_dir / "routers")   # fitted classifiers, kept between starts
    routers: dict[str, SemanticRouter] = {}
    for r in catalog.routers:
        cards = [Card(c, models[c].description, models[c].examples, models[c].context_length,
                      _price(models[c].price_input_per_mtok, models[c].price_output_per_mtok))
                 for c in r.candidates]
        training = [(e.prompt, e.model) for e in r.training_examples]
        routers[r.id] = SemanticRouter(r.id, cards, r.default, encoder, budget_ms=r.budget_ms,
                                       weights=r.weights.model_dump() if r.weights else None,
                                       max_cost_per_mtok=r.max_cost_per_mtok, margin=r.margin,
                                       scoring=r.scoring, blocks=PROMPT_BLOCKS, training=training,
                                       unlabelled=r.unlabelled_prompts,
                                       trainer=LogisticTrainer() if training or r.unlabelled_prompts else None,
                                       learnt_models=learnt)
    return routers


def _price(input_per_mtok: float, output_per_mtok: float) -> float | None:
    return (input_per_mtok + output_per_mtok) / 2 if input_per_mtok or output_per_mtok else None


async def prepare_routers(routers: Mapping[str, SemanticRouter]) -> None:
    """Embed the cards once. A router that cannot is not fatal: it answers with its default
    (reason "default: not prepared") and says so here."""
    for router in routers.values():
        try:
            await router.prepare()
        except Exception as exc:
            log.warning("router cards could not be embedded; it sends every request to its default",
                        extra={"router": router.id, "error": repr(exc)})


def build_services(settings: Settings) -> Services:
    pool = HttpPool(max_connections=settings.upstream_max_connections,
                    limits=UpstreamLimits(settings.upstream_max_body_bytes, settings.upstream_max_event_bytes,
                                          settings.upstream_socket_buffer_bytes))
    backends = build_backends(settings, pool)
    router = build_router(settings)
    directory = ModelDirectory(router, backends, ttl_s=settings.models_cache_ttl_s,
                               discover={b.name: b.discover for b in settings.catalog.backends},
                               virtual=[{"id": r.id, "object": "model", "created": 0, "owned_by": "appliance",
                                         "router": {"candidates": list(r.candidates), "default": r.default}}
                                        for r in settings.catalog.routers])
    features = [Feature("upstream", start=pool.start, close=pool.close)]
    tracer, tracing = build_tracing()  # the no-op unless an OTLP endpoint is set
    if tracing is not None:
        features.insert(0, tracing)    # closed last: the spans of the other features' ends go out too
    cfg = settings.routing
    upstreams = Upstreams(backends, BreakerPolicy(cfg.breaker_failures, cfg.breaker_cooldown_s,
                                                  cfg.breaker_max_cooldown_s), on_change=report_backend_breaker)
    replicated = sorted({b for m in settings.catalog.models if len(m.backends) > 1 for b in m.backends})
    features.append(LoadedModelPoll(backends, replicated, upstreams, cfg.loaded_poll_s).feature())

    inference = Inference(settings)
    features.append(inference.feature())

    recorders: list[Recorder] = [MetricsRecorder()]
    events = build_events(settings)
    if events is not None:
        recorders.append(events.recorder)
        features.append(events.feature)
    access = build_access(settings)  # settles reserved tokens and spend from the outcomes
    recorders.append(access.control)
    if access.feature is not None:
        features.append(access.feature)
    recorder = FanoutRecorder(*recorders)

    knowledge = build_knowledge(settings, inference.embedder, inference.reranker, recorder, tracer)
    if knowledge is not None:
        features.append(knowledge.feature)

    routers = build_routers(settings, inference)
    if routers:
        features.append(Feature("routers", start=lambda: prepare_routers(routers)))

    embeddings = EmbeddingService(inference.embedder, inference.reranker, recorder, served_by=served_path.get)
    parsers, parsers_feature = build_parsers(settings, count_parser_event)  # the output parser chain (docs/parsers.md)
    features.append(parsers_feature)
    moderation = build_moderation(settings, router, backends, upstreams)
    chat = ChatService(router, backends, directory, OrjsonCodec(), status_of=status_of, upstreams=upstreams,
                       recorder=recorder, context=knowledge.service if knowledge else None,
                       default_top_k=settings.knowledge.rag_top_k, bytes_per_token=cfg.bytes_per_token,
                       routers=routers, parsers=parsers, tracer=tracer, moderation=moderation)
    tokens = TokenCounter(chat.target, backends, upstreams, count_text=inference.embedder.count_tokens,
                          bytes_per_token=cfg.bytes_per_token)
    responses = build_responses(settings)
    if responses.feature is not None:
        features.append(responses.feature)
    activity = PgActivityLog(settings.database_url) if settings.database_url else None
    if activity is not None:
        features.append(Feature("activity", close=activity.close))
    return Services(settings, router, backends, directory, chat, embeddings,
                    knowledge.service if knowledge else None, tuple(features), activity=activity,
                    usage=PgUsageReader(settings.database_url) if settings.database_url else None, tracer=tracer,
                    responses=responses.archive, access=access.control, key_admin=access.store,
                    moderation=moderation, tokens=tokens)
