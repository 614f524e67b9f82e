"""The wire layer's one error: a request body that does not fit its protocol's schema."""

from __future__ import annotations


class WireError(ValueError):
    """Malformed, invalid or unsupported request body; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
