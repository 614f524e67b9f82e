"""One table from exceptions to HTTP status and the protocol's error body.

OpenAI shape `{"error": {"message", "type", "param", "code"}}` everywhere, except the
Anthropic shape on `/v1/messages` and Ollama's `{"error": "..."}` on `/api/`.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.domain.errors import ApplianceError, PayloadTooLarge, UpstreamError
from appliance.wire.errors import WireError

log = logging.getLogger("appliance.api")

_HTTP_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
               415: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error"}


def anthropic_type(status: int) -> str:
    """The Messages API error type for an HTTP status."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_payload(path: str, status: int, message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    if path.startswith("/v1/messages"):
        return {"type": "error", "error": {"type": anthropic_type(status), "message": message}}
    if path.startswith("/api/"):
        return {"error": message}
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def render(req: falcon.asgi.Request, resp: falcon.asgi.Response, status: int, message: str, type_: str,
           param: str | None = None, code: str | None = None) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(error_payload(req.path, status, message, type_, param, code))
    level = logging.ERROR if status >= 500 and status not in (502, 503, 504) else logging.WARNING
    log.log(level, "request failed", extra={"status": status, "error_type": type_, "error": message,
                                            "path": req.path, "param": param})


async def on_appliance_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: ApplianceError,
                             params: dict[str, Any]) -> None:
    if isinstance(ex, UpstreamError) and ex.backend:
        req.context.backend = ex.backend
    render(req, resp, ex.status, ex.message, ex.type, ex.param, ex.code)


async def on_wire_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: WireError,
                        params: dict[str, Any]) -> None:
    render(req, resp, 400, ex.message, "invalid_request_error", ex.param, None)


async def on_http_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: falcon.HTTPError,
                        params: dict[str, Any]) -> None:
    status = ex.status_code
    message = ex.description or ex.title or "error"
    if status == 404 and not ex.description:
        message = f"Unknown path {req.method} {req.path}"
    elif status == 405:
        message = f"Method {req.method} is not allowed on {req.path}"
    render(req, resp, status, message, _HTTP_TYPES.get(status, "api_error"))
    headers = ex.headers or {}
    resp.set_headers(headers)


async def on_unexpected(req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception,
                        params: dict[str, Any]) -> None:
    log.error("unhandled error", exc_info=ex, extra={"path": req.path})
    resp.status = 500
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(error_payload(req.path, 500, "Internal server error", "server_error", None, None))


def install(app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]) -> None:
    app.add_error_handler(Exception, on_unexpected)
    app.add_error_handler(falcon.HTTPError, on_http_error)
    app.add_error_handler(WireError, on_wire_error)
    app.add_error_handler(ApplianceError, on_appliance_error)


async def read_json(req: falcon.asgi.Request, limit: int) -> Any:
    """The request body decoded as JSON, at most `limit` bytes (413 above, 400 if malformed)."""
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes")
    raw = await req.stream.read() if length is not None else await _read_bounded(req, limit)
    if not raw:
        raise WireError("The request body is empty; a JSON object is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"Malformed JSON in the request body: {exc.msg} at position {exc.pos}") from exc


async def _read_bounded(req: falcon.asgi.Request, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in req.stream:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
