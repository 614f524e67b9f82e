"""The tracing port (domain/tracing.py) over the OpenTelemetry SDK, exporting OTLP/HTTP protobuf.

On only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set
and `OTEL_SDK_DISABLED` is not `true`; the SDK's own variables apply as usual
(`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_TRACES_SAMPLER`, `OTEL_BSP_MAX_QUEUE_SIZE` ...). Spans leave through the SDK's batch
processor, on its own thread, so the serving loop never waits on the collector; past its
queue (2048 spans by default) spans are dropped by the SDK, never the request. One provider
per process: build it in the process that serves (a Granian worker), after the fork.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from appliance.domain.tracing import Attributes, AttributeValue, Span

_PROPAGATOR = TraceContextTextMapPropagator()


def _clean(attributes: Attributes) -> dict[str, AttributeValue]:
    return {k: v for k, v in attributes.items() if v is not None}


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1_000_000_000)


class OtelSpan:
    __slots__ = ("_span", "trace_id")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self.trace_id = format(span.get_span_context().trace_id, "032x")

    def set(self, key: str, value: AttributeValue | None) -> None:
        if value is not None:
            self._span.set_attribute(key, value)

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def fail(self, message: str, error_type: str | None = None) -> None:
        self._span.set_status(Status(StatusCode.ERROR, message))
        if error_type:
            self._span.set_attribute("error.type", error_type)

    def end(self, end_time: float | None = None) -> None:
        self._span.end(_ns(end_time))


class OtelTracer:
    """`Tracer` over one SDK provider."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("appliance")

    def start_request(self, name: str, attributes: Attributes, traceparent: str | None = None) -> Span:
        # A fresh root (or the client's trace), never whatever an earlier request on this
        # task left current. Attached and not detached: the request's task ends with it.
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=_clean(attributes))
        otel_context.attach(trace.set_span_in_context(span, parent))
        return OtelSpan(span)

    def start(self, name: str, attributes: Attributes, *, start_time: float | None = None,
              client: bool = False) -> Span:
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
                                       attributes=_clean(attributes), start_time=_ns(start_time))
        return OtelSpan(span)

    @contextmanager
    def span(self, name: str, attributes: Attributes) -> Iterator[Span]:
        with self._tracer.start_as_current_span(name, attributes=_clean(attributes), record_exception=False,
                                                set_status_on_exception=False) as span:
            wrapped = OtelSpan(span)
            try:
                yield wrapped
            except BaseException as exc:
                wrapped.fail(str(exc) or type(exc).__name__, type(exc).__name__)
                raise

    async def shutdown(self) -> None:
        """Export what is queued (bounded by the SDK's export timeout), then stop."""
        await asyncio.to_thread(self._provider.shutdown)


def build_tracer(service_name: str = "appliance-gateway") -> OtelTracer:
    """The tracer exporting to the configured OTLP endpoint (wiring.py decides whether there is one)."""
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT itself (and adds /v1/traces to the former).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return OtelTracer(provider)
