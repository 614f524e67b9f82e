"""One exception tree for everything the gateway can refuse or fail at.

    ApplianceError              a failure of the gateway itself
    ├── InvalidRequest          malformed JSON, wrong types, missing fields (`param` names it)
    │   └── ContentFiltered     input moderation flagged the request (`categories` say why)
    ├── Unauthorized            missing or unknown API key
    ├── Forbidden               not allowed to this caller (a foreign Host, a model outside a key's list)
    ├── UnsupportedMediaType    a body that is not JSON where JSON is required
    ├── NotFound                unknown object (document, workspace)
    │   └── ModelNotFound       no catalog entry, route or discovered model matches
    ├── PayloadTooLarge         body above the configured limit
    ├── RequestTimeout          body not received within the configured time
    ├── RateLimited             over a key's requests or tokens per minute (`retry_after` says when)
    │   └── InsufficientQuota   a key's budget for its period is spent
    ├── UpstreamError           the LLM backend failed (`backend` names it)
    │   ├── BackendUnavailable  connection refused, reset, bad gateway, a broken answer
    │   ├── BackendTimeout      no answer within the timeout
    │   ├── BackendsResting     every backend of the model is in its breaker's cool-down (or asked for rest)
    │   └── BackendRejected     the backend refused the request; its status and message pass through
    └── DependencyUnavailable   PostgreSQL, NATS or the inference service is down for a feature that needs it

What each class means on the wire (HTTP status, log level, each dialect's error body and
mid-stream frame) is one table in `appliance.api.errors`; the domain says only what went
wrong. Adapters translate foreign exceptions into these (`raise X from exc`).
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the gateway reports to a client. `code` overrides the table's."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(ApplianceError):
    pass


class ContentFiltered(InvalidRequest):
    """The guard model flagged the input of a model that screens it: refused before any model saw it."""

    def __init__(self, categories: list[str], codes: list[str]) -> None:
        said = ", ".join(categories or codes) or "unsafe"
        super().__init__(f"The input was flagged by moderation ({said}) and was not sent to any model",
                         code="content_filter")
        self.categories = categories
        self.codes = codes


class Unauthorized(ApplianceError):
    pass


class Forbidden(ApplianceError):
    pass


class UnsupportedMediaType(ApplianceError):
    pass


class NotFound(ApplianceError):
    pass


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist", param="model")
        self.model = model


class PayloadTooLarge(ApplianceError):
    pass


class RequestTimeout(ApplianceError):
    pass


class RateLimited(ApplianceError):
    """Over a limit; `retry_after` (whole seconds, as text) is sent as Retry-After."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after


class InsufficientQuota(RateLimited):
    pass


class UpstreamError(ApplianceError):
    """The LLM backend failed; `backend` names it, `retry_after` is its Retry-After, if any.

    `quoted`: the message carries the backend's own words, which may echo the prompt: the
    client gets them, the log above debug level does not.
    """

    def __init__(self, message: str, *, backend: str = "", param: str | None = None, code: str | None = None,
                 retry_after: str | None = None, quoted: bool = False) -> None:
        super().__init__(message, param=param, code=code)
        self.backend = backend
        self.retry_after = retry_after
        self.quoted = quoted


class BackendUnavailable(UpstreamError):
    pass


class BackendTimeout(UpstreamError):
    pass


class BackendsResting(UpstreamError):
    pass


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
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend, param=param, code=code, retry_after=retry_after, quoted=True)
        self.upstream_status = status
        self.upstream_type = type


class DependencyUnavailable(ApplianceError):
    pass
