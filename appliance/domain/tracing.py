"""Tracing as a port: the spans the gateway makes, with nothing of OpenTelemetry in the domain.

The request's span is made by the transport when a request comes in (`start_request`) and
is current for the rest of the request's task; the domain's spans are its children: the
semantic router's decision (`route`), retrieval (`retrieve`, with `embed`, `search` and
`rerank` under it) and the upstream call (`chat {model}`, with the GenAI semantic-convention
attributes and time to first token). The adapter (appliance/tracing/otel.py) implements this
with the OpenTelemetry SDK when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise `NO_TRACER`
stands in, and callers test `enabled` before building anything for a span, so tracing off
costs an attribute read per place that could trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Final, Protocol

AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue | None]   # None values are left out


class Span(Protocol):
    trace_id: str          # 32 hex digits ("" when not tracing): what log lines carry

    def set(self, key: str, value: AttributeValue | None) -> None:
        ...

    def rename(self, name: str) -> None:
        ...

    def fail(self, message: str, error_type: str | None = None) -> None:
        """Mark the span as failed (status error, `error.type`)."""
        ...

    def end(self, end_time: float | None = None) -> None:
        """End it (at `end_time`, unix seconds, when given)."""
        ...


class Tracer(Protocol):
    enabled: bool

    def start_request(self, name: str, attributes: Attributes, traceparent: str | None = None) -> Span:
        """A request's server span, current from now on in this task; a W3C `traceparent`
        from the client makes it a child of the client's trace."""
        ...

    def start(self, name: str, attributes: Attributes, *, start_time: float | None = None,
              client: bool = False) -> Span:
        """A child of the current span, not made current (`start_time` in unix seconds)."""
        ...

    def span(self, name: str, attributes: Attributes) -> AbstractContextManager[Span]:
        """A child of the current span, current while the block runs; an exception leaving
        the block marks it failed."""
        ...


class _NoSpan:
    trace_id = ""

    def set(self, key: str, value: AttributeValue | None) -> None:
        return None

    def rename(self, name: str) -> None:
        return None

    def fail(self, message: str, error_type: str | None = None) -> None:
        return None

    def end(self, end_time: float | None = None) -> None:
        return None


NO_SPAN: Final = _NoSpan()


class _NoSpanBlock:
    """`with NO_TRACER.span(...)`: one shared object, no generator per block."""

    def __enter__(self) -> Span:
        return NO_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_BLOCK: Final = _NoSpanBlock()


class _NoTracer:
    enabled = False

    def start_request(self, name: str, attributes: Attributes, traceparent: str | None = None) -> Span:
        return NO_SPAN

    def start(self, name: str, attributes: Attributes, *, start_time: float | None = None,
              client: bool = False) -> Span:
        return NO_SPAN

    def span(self, name: str, attributes: Attributes) -> AbstractContextManager[Span]:
        return _NO_BLOCK


NO_TRACER: Final[Tracer] = _NoTracer()
