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

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        if outcome.tokens:
            labelled(TOKENS, "embedding", model_label(outcome.model)).inc(outcome.tokens)

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        return None
