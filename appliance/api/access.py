"""Keys on every request: who is calling, what they may use, and how much.

`AccessGuard` is Falcon middleware that runs after `RequestContext` on every path but the
probes and the web UI's static files, whatever the dialect, so an endpoint added later is
covered without a line of its own:

- the key (`Authorization: Bearer` or `x-api-key`) is hashed and looked up in memory:
  401 for a missing, unknown, revoked or expired key while any key exists (a secret that
  found a key keeps its hash in a bounded cache, `DIGESTS_MAX`: the lookup itself is
  still made on every request, so a revocation or rotation counts at once);
- `req.context.caller` is the `Caller` (key name, admin flag, allowlists) for resources;
  `/admin/...` needs an admin key (`require_admin` says the same for a resource that wants
  it explicitly);
- requests per minute and a spent budget are judged here (429, `insufficient_quota`); a
  workspace in the path (`/v1/knowledge/{workspace}/...`) or in `x-workspace` is checked
  against the key's list (403);
- the model, which is in the body, is checked where each dialect reads it: `admit_chat`
  (called by `api.streaming.chat_request`, which every chat dialect goes through; it also
  reserves the tokens the call may use) and `check_model` (embeddings);
- the model listings (`/v1/models`, `/api/tags`) show a key only the models it may use
  (`visible_models`); a lookup of another (`/v1/models/{id}`, `/api/show`) is a 404;
- every response of a key with limits carries OpenAI's `x-ratelimit-*` headers; a 429
  carries `Retry-After`.

Each refusal is one audit event (`denied`, with the key's name, never the key) and the
error table's log line, which names the key too (`logs.key_name`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, Final

import falcon.asgi

from appliance import logs
from appliance.api.middleware import is_ui_shell
from appliance.domain.access import ANONYMOUS, AccessControl, AuditEvent, Caller
from appliance.domain.errors import ApplianceError, Forbidden, RateLimited, Unauthorized

log = logging.getLogger(__name__)

_OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
DIGESTS_MAX: Final = 1024   # secrets that found a key, whose SHA-256 is kept (emptied when full)
ADMIN_PREFIX: Final = "/admin"
_DENIALS: Final = (Unauthorized, Forbidden, RateLimited)


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def presented_secret(req: falcon.asgi.Request) -> str:
    """The key the request carries (`Authorization: Bearer` over `x-api-key`), or ""."""
    token = req.get_header("x-api-key") or ""
    auth = req.get_header("Authorization")
    if auth and auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
    return token


def presented_digest(req: falcon.asgi.Request) -> str | None:
    """The SHA-256 of the key the request carries, or None when it carries none."""
    token = presented_secret(req)
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def caller_of(req: falcon.asgi.Request) -> Caller:
    """The authenticated caller (`ANONYMOUS` while the gateway has no keys)."""
    caller: Caller = getattr(req.context, "caller", ANONYMOUS)
    return caller


def require_admin(req: falcon.asgi.Request) -> Caller:
    """The caller, if it holds an admin key: 401 without a key, 403 with another key."""
    caller = caller_of(req)
    if caller.key is None:
        raise Unauthorized("The admin API needs an admin key: send 'Authorization: Bearer <key>'")
    if not caller.admin:
        raise Forbidden(f"Key '{caller.name}' is not an admin key", code="admin_only")
    return caller


def _guard(req: falcon.asgi.Request) -> AccessGuard | None:
    guard: AccessGuard | None = getattr(req.context, "access", None)
    return guard


def check_model(req: falcon.asgi.Request, model: str) -> None:
    """403 when the caller's key may not use `model`."""
    guard = _guard(req)
    if guard is not None:
        guard.checked(req, lambda: guard.control.check_model(caller_of(req), model))


def visible_models(req: falcon.asgi.Request, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models of a listing (OpenAI `model` objects, routers among them) that the caller's
    key may use; the listing itself for a key without a model list, or no key at all."""
    key = caller_of(req).key
    if key is None or not key.models:
        return models
    return [m for m in models if key.allows_model(m["id"])]


def may_see_model(req: falcon.asgi.Request, model: str) -> bool:
    """Whether the caller's key may use `model` (a lookup of one that it may not is a 404, as
    if the model did not exist: the listings do not show it either)."""
    key = caller_of(req).key
    return key is None or key.allows_model(model)


def admit_chat(req: falcon.asgi.Request, model: str, body: dict[str, Any], *, correlation_id: str | None = None) -> None:
    """Before a chat call: the model against the key's list, then its tokens reserved
    (the prompt estimated from the body's size, `max_tokens` or the default). `correlation_id`:
    a further chat call of the same request, with its own outcome (a legacy completion's prompts)."""
    guard = _guard(req)
    if guard is None:
        return
    caller = caller_of(req)
    key = caller.key
    if key is None:
        return
    control = guard.control
    try:  # `checked`, written out: this runs on every chat
        control.check_model(caller, model)
        if key.tpm is not None:
            limit = body.get("max_completion_tokens", body.get("max_tokens"))
            control.reserve(caller, correlation_id or req.context.cid, limit if isinstance(limit, int) else None,
                            (req.content_length or 0) // 4)
    except _DENIALS as exc:
        guard.deny(req, exc)
        raise


class AccessGuard:
    """Falcon middleware: see the module docstring."""

    def __init__(self, control: AccessControl) -> None:
        self.control = control
        # secret -> its SHA-256, for secrets that found a key (so a flood of wrong ones cannot
        # fill it). Found by the str's hash, randomised per process like the directory's own
        # lookup by digest: a probe learns nothing from the time it takes.
        self._digests: dict[str, str] = {}

    def _digest(self, secret: str) -> str:
        digest = self._digests.get(secret)
        return digest if digest is not None else hashlib.sha256(secret.encode()).hexdigest()

    def _remember(self, secret: str, digest: str) -> None:
        if len(self._digests) >= DIGESTS_MAX:
            log.info("key digest cache full: emptied", extra={"entries": len(self._digests)})
            self._digests.clear()
        self._digests[secret] = digest

    def checked(self, req: falcon.asgi.Request, check: Callable[[], None]) -> None:
        """Run `check`; a refusal is audited, then raised for the error table."""
        try:
            check()
        except _DENIALS as exc:
            self.deny(req, exc)
            raise

    def deny(self, req: falcon.asgi.Request, exc: ApplianceError) -> None:
        status = 401 if isinstance(exc, Unauthorized) else 403 if isinstance(exc, Forbidden) else 429
        name = caller_of(req).name
        if name is None and status == 401:  # a revoked or expired key still has a name
            digest = presented_digest(req)
            known = self.control.directory.find(digest) if digest else None
            name = known.name if known else None
        self.control.audit.record(AuditEvent(
            "denied", name, status=status, method=req.method, path=req.path,
            correlation_id=getattr(req.context, "cid", None),
            detail={"reason": exc.code or type(exc).__name__, "message": exc.message}))

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        ctx = req.context
        ctx.caller = ANONYMOUS
        ctx.access = self
        logs.key_name.set(None)
        path = req.path
        if path in _OPEN_PATHS or is_ui_shell(path):
            return
        control = self.control
        secret = presented_secret(req)
        digest = self._digest(secret) if secret else None
        try:  # `checked`, written out: this runs on every request
            caller = ctx.caller = control.authenticate(digest)
            key = caller.key
            if key is not None:
                logs.key_name.set(key.name)
                if digest is not None and secret not in self._digests:
                    self._remember(secret, digest)
            if is_admin_path(path):
                require_admin(req)
            workspace = req.get_header("x-workspace")
            if workspace is not None:
                control.check_workspace(caller, workspace)
            control.admit(caller, ctx.cid)
        except _DENIALS as exc:
            self.deny(req, exc)
            raise

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any,
                               params: dict[str, Any]) -> None:
        workspace = params.get("workspace")
        if isinstance(workspace, str):
            caller = caller_of(req)
            self.checked(req, lambda: self.control.check_workspace(caller, workspace))

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any,
                               req_succeeded: bool) -> None:
        ctx = req.context
        caller: Caller | None = getattr(ctx, "caller", None)
        if caller is None or caller.key is None:
            return
        resp.set_headers(self.control.headers(caller))
        if not getattr(ctx, "defer_log", False):  # a stream settles when it ends (its outcome)
            self.control.release(ctx.cid)
        if is_admin_path(req.path) and caller.admin:
            self.control.audit.record(AuditEvent(
                "admin.call", caller.name, status=falcon.http_status_to_code(resp.status), method=req.method,
                path=req.path, correlation_id=ctx.cid, actor=caller.name))
