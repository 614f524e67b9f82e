"""Whether this process traces, and the tracer if it does: the OpenTelemetry SDK is imported
only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, so a gateway that
does not trace neither loads it nor makes a span (docs/usage.md)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from appliance.domain.tracing import NO_TRACER, Tracer
from appliance.feature import Feature

log = logging.getLogger(__name__)


def tracing_configured(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def build_tracing(service_name: str = "appliance-gateway") -> tuple[Tracer, Feature | None]:
    """The tracer and its feature (spans still queued are exported on close), or the no-op."""
    if not tracing_configured():
        return NO_TRACER, None
    from appliance.tracing.otel import build_tracer

    tracer = build_tracer(service_name)
    log.info("tracing on: spans exported over OTLP/HTTP",
             extra={"endpoint": os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                    or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")})
    return tracer, Feature("tracing", close=tracer.shutdown)
