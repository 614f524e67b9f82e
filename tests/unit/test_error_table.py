"""The one error table: every failure's status, log level, and each dialect's body and frame."""

from __future__ import annotations

import json
import logging

import falcon
import pytest

from appliance.api import errors
from appliance.api.errors import Failure, dialect_for, failure_of
from appliance.domain import errors as domain_errors
from appliance.domain.errors import (
    ApplianceError,
    BackendRejected,
    BackendsResting,
    BackendTimeout,
    BackendUnavailable,
    DependencyUnavailable,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from appliance.wire.errors import WireError


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_every_domain_error_has_its_own_row() -> None:
    # A new class in the tree without a row would silently take its parent's status.
    declared = {c for c in _all_subclasses(ApplianceError) if c.__module__ == domain_errors.__name__}
    assert declared <= set(errors.KINDS), sorted(c.__name__ for c in declared - set(errors.KINDS))


@pytest.mark.parametrize(("exc", "status", "type_", "code", "level"), [
    (InvalidRequest("bad", param="x"), 400, "invalid_request_error", None, logging.WARNING),
    (WireError("bad", "messages"), 400, "invalid_request_error", None, logging.WARNING),
    (Unauthorized("no key"), 401, "authentication_error", "invalid_api_key", logging.WARNING),
    (ModelNotFound("gpt-99"), 404, "invalid_request_error", "model_not_found", logging.WARNING),
    (PayloadTooLarge("big"), 413, "invalid_request_error", "payload_too_large", logging.WARNING),
    (RequestTimeout("slow"), 408, "invalid_request_error", "request_timeout", logging.WARNING),
    (BackendUnavailable("down", backend="b"), 502, "api_error", "backend_unavailable", logging.WARNING),
    (BackendTimeout("slow", backend="b"), 504, "api_error", "backend_timeout", logging.WARNING),
    (BackendsResting("resting", backend="b"), 503, "api_error", "backends_resting", logging.WARNING),
    (DependencyUnavailable("pg"), 503, "service_unavailable", "dependency_unavailable", logging.WARNING),
    (ApplianceError("odd"), 500, "server_error", None, logging.ERROR),
])
def test_rows(exc: Exception, status: int, type_: str, code: str | None, level: int) -> None:
    failure = failure_of(exc)
    assert (failure.status, failure.type, failure.code, failure.level) == (status, type_, code, level)
    assert failure.message == exc.args[0]


def test_a_backend_rejection_keeps_the_backends_status_type_and_code() -> None:
    failure = failure_of(BackendRejected("too long", status=422, backend="b", type="context_length", code="ctx"))
    assert (failure.status, failure.type, failure.code, failure.message) == (422, "context_length", "ctx", "too long")


def test_a_given_code_overrides_the_rows() -> None:
    assert failure_of(InvalidRequest("bad", code="content_filter")).code == "content_filter"


def test_a_bug_is_500_and_never_shows_its_message() -> None:
    failure = failure_of(KeyError("secret-ish internals"))
    assert failure.status == 500 and failure.message == "Internal server error" and failure.level == logging.ERROR


def test_falcon_errors_go_through_the_same_rows() -> None:
    failure = failure_of(falcon.HTTPMethodNotAllowed(["GET"]))
    assert failure.status == 405 and failure.type == "invalid_request_error"
    invalid = failure_of(falcon.HTTPInvalidParam("must be an integer", "offset"))
    assert invalid.status == 400 and invalid.param == "offset"


def test_dialects_by_path() -> None:
    assert dialect_for("/v1/messages").name == "anthropic"
    assert dialect_for("/v1/messages/count_tokens").name == "anthropic"
    assert dialect_for("/api/chat").name == "ollama"
    assert dialect_for("/v1/chat/completions").name == "openai"
    assert dialect_for("/v1/knowledge/ws/search").name == "openai"


FAILURE = Failure(429, "rate_limit_error", "slow down", "model", "rate_limit_exceeded")


def test_each_dialects_body() -> None:
    assert dialect_for("/v1/chat/completions").body(FAILURE) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": "model", "code": "rate_limit_exceeded"}}
    assert dialect_for("/v1/messages").body(FAILURE) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert dialect_for("/api/chat").body(FAILURE) == {"error": "slow down"}


def test_each_dialects_mid_stream_frame() -> None:
    openai = dialect_for("/v1/chat/completions").frame(FAILURE)
    assert openai.startswith(b"data: ") and openai.endswith(b"\n\n")
    assert json.loads(openai[6:]) == dialect_for("/v1/chat/completions").body(FAILURE)
    anthropic = dialect_for("/v1/messages").frame(FAILURE)
    name, data = anthropic.decode().rstrip("\n").split("\n")
    assert name == "event: error" and json.loads(data.removeprefix("data: ")) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert dialect_for("/api/chat").frame(FAILURE) == b'{"error":"slow down"}\n'


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (404, "not_found_error"),
                                              (413, "request_too_large"), (529, "overloaded_error"),
                                              (503, "api_error"), (418, "invalid_request_error")])
def test_anthropic_types_by_status(status: int, kind: str) -> None:
    assert errors.anthropic_type(status) == kind
