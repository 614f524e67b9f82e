"""The one error table: what each failure is on the wire, in every dialect.

Two parts, both read by `failure_of` and `dialect_for` and nothing else:

- `KINDS`: each exception class of `appliance.domain.errors` (and the wire packages'
  `WireError`) -> HTTP status, OpenAI error type, default code, and the log level it gets.
  The nearest class in an exception's MRO wins; a `BackendRejected` keeps the status and
  type the backend sent.
- `DIALECTS`: each protocol's error body (the JSON a response carries) and mid-stream error
  frame (what ends a stream whose head has gone out), chosen by path prefix. Adding a
  dialect is one row.

Falcon's own errors (404 for an unknown path, 405) and anything unexpected (a bug: 500,
logged with its traceback) go through the same rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import falcon
import falcon.asgi
import orjson

from appliance.anthropic.stream import sse_event
from appliance.domain.errors import (
    ApplianceError,
    BackendRejected,
    BackendsResting,
    BackendTimeout,
    BackendUnavailable,
    ContentFiltered,
    DependencyUnavailable,
    Forbidden,
    InsufficientQuota,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
)
from appliance.openai.sse import encode as sse_data
from appliance.wire.errors import WireError

log = logging.getLogger("appliance.api")


@dataclass(frozen=True, slots=True)
class Kind:
    status: int
    type: str                    # the OpenAI error type
    code: str | None = None
    level: int = logging.WARNING


KINDS: Final[Mapping[type[BaseException], Kind]] = {
    InvalidRequest: Kind(400, "invalid_request_error"),
    WireError: Kind(400, "invalid_request_error"),
    ContentFiltered: Kind(400, "invalid_request_error", "content_filter"),
    Unauthorized: Kind(401, "authentication_error", "invalid_api_key"),
    Forbidden: Kind(403, "permission_error", "forbidden"),
    NotFound: Kind(404, "invalid_request_error", "not_found"),
    ModelNotFound: Kind(404, "invalid_request_error", "model_not_found"),
    PayloadTooLarge: Kind(413, "invalid_request_error", "payload_too_large"),
    UnsupportedMediaType: Kind(415, "invalid_request_error", "unsupported_media_type"),
    RequestTimeout: Kind(408, "invalid_request_error", "request_timeout"),
    RateLimited: Kind(429, "rate_limit_error", "rate_limit_exceeded"),
    InsufficientQuota: Kind(429, "insufficient_quota", "insufficient_quota"),
    UpstreamError: Kind(502, "api_error"),
    BackendUnavailable: Kind(502, "api_error", "backend_unavailable"),
    BackendTimeout: Kind(504, "api_error", "backend_timeout"),
    BackendsResting: Kind(503, "api_error", "backends_resting"),
    BackendRejected: Kind(400, "invalid_request_error"),  # status and type: the backend's own
    DependencyUnavailable: Kind(503, "service_unavailable", "dependency_unavailable"),
    ApplianceError: Kind(500, "server_error", level=logging.ERROR),
    BaseException: Kind(500, "server_error", level=logging.ERROR),
}
_HTTP_TYPES: Final = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                      404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                      415: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES: Final = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                           404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                           529: "overloaded_error"}
INTERNAL: Final = "Internal server error"
_FALCON_PARAM: Final = re.compile(r'^The "([^"]{1,64})" parameter')


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure as every dialect renders it."""

    status: int
    type: str
    message: str
    param: str | None = None
    code: str | None = None
    level: int = logging.WARNING
    retry_after: str | None = None   # sent as Retry-After (a backend's own, passed through)


_resolved: dict[type[BaseException], Kind] = {}


def _kind(cls: type[BaseException]) -> Kind:
    kind = _resolved.get(cls)
    if kind is None:
        kind = _resolved[cls] = next(KINDS[c] for c in cls.__mro__ if c in KINDS)
    return kind


def failure_of(exc: BaseException) -> Failure:
    """The table's row for `exc`; a bug's message is never shown to the client."""
    kind = _kind(type(exc))
    if isinstance(exc, BackendRejected):
        return Failure(exc.upstream_status, exc.upstream_type or kind.type, exc.message, exc.param, exc.code,
                       retry_after=exc.retry_after)
    if isinstance(exc, ApplianceError | WireError):
        code = getattr(exc, "code", None) or kind.code
        return Failure(kind.status, kind.type, exc.message, exc.param, code, kind.level,
                       getattr(exc, "retry_after", None))
    if isinstance(exc, falcon.HTTPError):
        status = exc.status_code
        # Falcon's invalid/missing parameter errors name the parameter only in their text.
        named = _FALCON_PARAM.match(exc.description or "")
        return Failure(status, _HTTP_TYPES.get(status, "api_error"), exc.description or exc.title or "error",
                       named.group(1) if named else None,
                       level=logging.ERROR if status >= 500 else logging.WARNING)
    return Failure(kind.status, kind.type, INTERNAL, level=kind.level)


def status_of(exc: BaseException) -> int:
    """The HTTP status `exc` answers with (what the outcome of a request records)."""
    return failure_of(exc).status


def anthropic_type(status: int) -> str:
    """The Messages API error type for an HTTP status."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _openai_body(f: Failure) -> dict[str, Any]:
    return {"error": {"message": f.message, "type": f.type, "param": f.param, "code": f.code}}


def _anthropic_body(f: Failure) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_type(f.status), "message": f.message}}


def _ollama_body(f: Failure) -> dict[str, Any]:
    return {"error": f.message}


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    prefix: str
    body: Callable[[Failure], dict[str, Any]]
    frame: Callable[[Failure], bytes]   # ends a stream whose head is gone already


DIALECTS: Final = (
    Dialect("anthropic", "/v1/messages", _anthropic_body, lambda f: sse_event("error", _anthropic_body(f))),
    Dialect("ollama", "/api/", _ollama_body, lambda f: orjson.dumps(_ollama_body(f)) + b"\n"),
    # A Responses stream ends with `response.failed`, which carries the stream's sequence number
    # and the output so far: its translator writes it (api/responses.py), nothing follows.
    Dialect("responses", "/v1/responses", _openai_body, lambda f: b""),
    Dialect("openai", "", _openai_body, lambda f: sse_data(orjson.dumps(_openai_body(f)))),
)


def dialect_for(path: str) -> Dialect:
    return next(d for d in DIALECTS if path.startswith(d.prefix))


def log_failure(req: falcon.asgi.Request, failure: Failure, exc: BaseException | None = None) -> None:
    """One line per failed request, at the table's level; a bug's line carries its traceback.
    A backend's own words (which may echo the prompt) are logged at debug level only."""
    said = failure.message
    if isinstance(exc, UpstreamError) and exc.quoted:
        log.debug("backend said", extra={"backend": exc.backend, "error": said})
        said = f"backend {exc.backend} answered HTTP {failure.status}" if isinstance(exc, BackendRejected) \
            else f"backend {exc.backend} failed (its message is logged at debug level)"
    log.log(failure.level, "request failed", exc_info=exc if failure.message == INTERNAL else None,
            extra={"status": failure.status, "error_type": failure.type, "error": said,
                   "path": req.path, "param": failure.param})


def render(req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: BaseException) -> Failure:
    failure = failure_of(exc)
    if failure.status == 404 and isinstance(exc, falcon.HTTPError) and not exc.description:
        failure = Failure(404, failure.type, f"Unknown path {req.method} {req.path}")
    elif failure.status == 405 and isinstance(exc, falcon.HTTPError):
        failure = Failure(405, failure.type, f"Method {req.method} is not allowed on {req.path}")
    if isinstance(exc, UpstreamError) and exc.backend:
        req.context.backend = exc.backend
    resp.status = failure.status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(dialect_for(req.path).body(failure))
    if isinstance(exc, falcon.HTTPError) and exc.headers:
        resp.set_headers(exc.headers)
    if failure.retry_after:
        resp.set_header("Retry-After", failure.retry_after)
    log_failure(req, failure, exc)
    return failure


async def _handle(req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: BaseException,
                  params: dict[str, Any]) -> None:
    render(req, resp, ex)


def install(app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]) -> None:
    # Falcon picks the handler of the most specific class registered, so each is named.
    for cls in (Exception, falcon.HTTPError, WireError, ApplianceError):
        app.add_error_handler(cls, _handle)
