"""Prometheus metrics of the inference path (gateway side and service side)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter("appliance_inference_calls_total", "Embedding/rerank calls by the path that served them",
                ["op", "path"])
FALLBACKS = Counter("appliance_inference_fallbacks_total",
                    "Calls served in process because the gRPC service failed or the breaker was open",
                    ["op", "reason"])
BREAKER_STATE = Gauge("appliance_inference_breaker_state",
                      "gRPC inference breaker: 0 closed, 1 open, 2 half-open", ["breaker"],
                      multiprocess_mode="max")
RERANK_CACHE = Counter("appliance_inference_rerank_cache_total",
                       "MaxSim rerank document token-vector cache look-ups", ["result"])
RPCS = Counter("appliance_inference_rpcs_total", "gRPC calls answered by the inference service",
               ["method", "code"])
RPC_SECONDS = Histogram("appliance_inference_rpc_duration_seconds", "gRPC call duration in the service",
                        ["method"], buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
