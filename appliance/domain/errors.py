"""One exception tree for everything the gateway can refuse or fail at.

    ApplianceError
    ├── InvalidRequest          400  malformed JSON, wrong types, missing fields (`param` names it)
    ├── Unauthorized            401  missing or unknown API key
    ├── NotFound                404  unknown route object (document, workspace)
    │   └── ModelNotFound       404  no catalog entry, route or discovered model matches
    ├── PayloadTooLarge         413  body above the configured limit
    ├── RateLimited             429
    ├── UpstreamError                the LLM backend failed
    │   ├── BackendUnavailable  502  connection refused, reset, bad gateway
    │   ├── BackendTimeout      504  no answer within the timeout
    │   └── BackendRejected     4xx  the backend refused the request; its status and message pass through
    └── DependencyUnavailable   503  PostgreSQL, NATS or the inference service is down for a feature that needs it

`appliance.api.errors` maps each class to an HTTP status and the protocol's error body;
adapters translate foreign exceptions into these (`raise X from exc`).
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the gateway reports to a client."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(ApplianceError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(ApplianceError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ApplianceError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist", param="model")
        self.model = model


class PayloadTooLarge(ApplianceError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(ApplianceError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(ApplianceError):
    """The LLM backend failed; `backend` names it."""

    status = 502
    type = "api_error"

    def __init__(self, message: str, *, backend: str = "", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.backend = backend


class BackendUnavailable(UpstreamError):
    status = 502
    code = "backend_unavailable"


class BackendTimeout(UpstreamError):
    status = 504
    code = "backend_timeout"


class BackendRejected(UpstreamError):
    """A 4xx from the backend, passed through with its own status, message and type."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        backend: str = "",
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend, param=param, code=code)
        self.status = status
        self.type = type or "invalid_request_error"


class DependencyUnavailable(ApplianceError):
    status = 503
    type = "service_unavailable"
    code = "dependency_unavailable"
