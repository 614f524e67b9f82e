"""Prometheus metrics of the gateway and `GET /metrics` (multiprocess-aware for workers > 1)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Final

import falcon
import falcon.asgi
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from appliance.domain.breaker import reporter
from appliance.domain.records import ChatOutcome, EmbeddingOutcome, RetrievalOutcome

HTTP_REQUESTS = Counter("appliance_http_requests_total", "HTTP requests answered",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("appliance_http_request_duration_seconds", "Time to the response head",
                          ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
TOKENS = Counter("appliance_tokens_total", "Tokens processed", ["direction", "model"])
COST = Counter("appliance_cost_usd_total", "Cost of chat completions by catalog prices", ["model"])
BACKEND_BREAKER = Gauge("appliance_backend_breaker_state", "Backend breaker: 0 closed, 1 open, 2 half-open",
                        ["backend"], multiprocess_mode="max")
ROUTER_DECISIONS = Counter("appliance_router_decisions_total", "Semantic router choices",
                           ["router", "candidate", "defaulted"])
ROUTER_SECONDS = Histogram("appliance_router_decision_seconds", "Time a semantic router took to choose", ["router"],
                           buckets=(0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1))
FALLBACKS = Counter("appliance_chat_fallbacks_total", "Chats answered by a fallback model", ["model", "fallback"])
MALFORMED = Counter("appliance_upstream_malformed_events_total",
                    "Upstream stream events skipped because they were not a readable chunk", ["backend"])
CHATS = Counter("appliance_chat_completions_total", "Chat completions", ["model", "backend", "route", "streaming", "status"])
# The OpenTelemetry GenAI metrics (gen_ai.client.token.usage, gen_ai.client.operation.duration,
# gen_ai.server.time_to_first_token, gen_ai.server.time_per_output_token) under their Prometheus
# names, with the semantic conventions' bucket boundaries; per model, backend and key (bounded together).
_GENAI = ["gen_ai_operation_name", "model", "backend", "key"]
GENAI_TOKENS = Histogram("gen_ai_client_token_usage", "Tokens per request (gen_ai.client.token.usage)",
                         [*_GENAI, "gen_ai_token_type"],
                         buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304))
GENAI_DURATION = Histogram("gen_ai_client_operation_duration_seconds",
                           "Request duration, first byte in to last byte out (gen_ai.client.operation.duration)",
                           _GENAI, buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                                            20.48, 40.96, 81.92))
GENAI_TTFT = Histogram("gen_ai_server_time_to_first_token_seconds",
                       "Time to the first token of a stream (gen_ai.server.time_to_first_token)", _GENAI,
                       buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                                7.5, 10.0))
GENAI_TPOT = Histogram("gen_ai_server_time_per_output_token_seconds",
                       "Time per output token after the first, of a stream (gen_ai.server.time_per_output_token)",
                       _GENAI, buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5))
KEY_COST = Counter("appliance_key_cost_usd_total", "Cost by catalog prices, per key, model and backend",
                   ["model", "backend", "key"])


log = logging.getLogger(__name__)
_children: dict[tuple[object, ...], Any] = {}
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
OTHER: Final = "other"


class BoundedLabel:
    """Label values as they come, up to `limit` distinct ones; later newcomers count as
    "other". A model name is the client's choice (any name a route glob matches), so without
    a bound every scrape would grow with whatever names callers invent."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


model_label = BoundedLabel(200)


class BoundedLabels:
    """Like `BoundedLabel`, for a combination of values: up to `limit` distinct tuples, later
    newcomers all count as ("other", ...). Models x backends x keys would multiply past any
    one label's bound."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[tuple[str, ...]] = set()

    def __call__(self, *values: str) -> tuple[str, ...]:
        if values in self._seen:
            return values
        if len(self._seen) >= self._limit:
            return tuple(OTHER for _ in values)
        self._seen.add(values)
        return values


genai_labels = BoundedLabels(500)
_genai_chat: dict[tuple[str, str, str], tuple[Any, ...]] = {}


def _chat_children(model: str, backend: str, key: str) -> tuple[Any, ...]:
    """A chat's six GenAI series for (model, backend, key), looked up once per combination (up
    to 1,000 remembered: the names are the clients' own)."""
    found = _genai_chat.get((model, backend, key))
    if found is None:
        m, b, k = genai_labels(model_label(model), backend, key)
        found = (
            GENAI_TOKENS.labels("chat", m, b, k, "input"), GENAI_TOKENS.labels("chat", m, b, k, "output"),
            GENAI_DURATION.labels("chat", m, b, k), KEY_COST.labels(m, b, k), GENAI_TTFT.labels("chat", m, b, k),
            GENAI_TPOT.labels("chat", m, b, k))
        if len(_genai_chat) < 1000:
            _genai_chat[(model, backend, key)] = found
    return found


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def labelled(metric: Any, *labels: object) -> Any:
    """`metric.labels(*labels)`, cached: the lookup is measurable on the hot path."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class MetricsResource:
    """This process's metrics (every worker's when there are several), plus `collectors`
    that read state kept outside the workers (the event relay's, say) at scrape time."""

    def __init__(self, collectors: Sequence[Collector] = ()) -> None:
        self._extra = CollectorRegistry()
        for collector in collectors:
            self._extra.register(collector)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            resp.data = generate_latest(registry) + generate_latest(self._extra)
        else:
            resp.data = generate_latest() + generate_latest(self._extra)
        resp.content_type = CONTENT_TYPE_LATEST


# A backend's breaker changed state: the gauge, and a line an operator will look for.
report_backend_breaker = reporter(lambda name, state: BACKEND_BREAKER.labels(name).set(state), log,
                                  opened="backend breaker open: its requests go to replicas and fallbacks",
                                  closed="backend breaker closed", key="backend")


class MetricsRecorder:
    """Counts tokens, cost and completions per model from chat outcomes."""

    def chat(self, outcome: ChatOutcome) -> None:
        model = model_label(outcome.model)
        labelled(CHATS, model, outcome.backend, outcome.route, "true" if outcome.streaming else "false",
                 outcome.status).inc()
        if outcome.usage.prompt_tokens:
            labelled(TOKENS, "input", model).inc(outcome.usage.prompt_tokens)
        if outcome.usage.completion_tokens:
            labelled(TOKENS, "output", model).inc(outcome.usage.completion_tokens)
        if outcome.cost_usd:
            labelled(COST, model).inc(outcome.cost_usd)
        routing = outcome.routing
        if routing and "router" in routing:
            labelled(ROUTER_DECISIONS, routing["router"], routing["selected"],
                     "true" if routing.get("defaulted") else "false").inc()
            labelled(ROUTER_SECONDS, routing["router"]).observe(routing.get("decision_ms", 0.0) / 1000)
        fallback = routing.get("fallback") if routing else None
        if fallback:
            labelled(FALLBACKS, model_label(fallback["from"]), model_label(fallback["to"])).inc()
        if outcome.malformed_events:
            labelled(MALFORMED, outcome.backend).inc(outcome.malformed_events)
        self._genai(outcome)

    @staticmethod
    def _genai(outcome: ChatOutcome) -> None:
        tokens_in, tokens_out, duration, cost, ttft, tpot = _chat_children(outcome.model, outcome.backend,
                                                                            outcome.key or "")
        usage = outcome.usage
        tokens_in.observe(usage.prompt_tokens)
        tokens_out.observe(usage.completion_tokens)
        duration.observe(outcome.latency_ms / 1000)
        if outcome.cost_usd:
            cost.inc(outcome.cost_usd)
        if outcome.ttft_ms is not None:
            ttft.observe(outcome.ttft_ms / 1000)
            if usage.completion_tokens > 1:
                tpot.observe(max((outcome.latency_ms - outcome.ttft_ms) / 1000 / (usage.completion_tokens - 1), 0.0))

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        if outcome.tokens:
            labelled(TOKENS, "embedding", model_label(outcome.model)).inc(outcome.tokens)
        model, backend, key = genai_labels(model_label(outcome.model), "inference", outcome.key or "")
        labelled(GENAI_TOKENS, "embeddings", model, backend, key, "input").observe(outcome.tokens)
        labelled(GENAI_DURATION, "embeddings", model, backend, key).observe(outcome.latency_ms / 1000)

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        return None
