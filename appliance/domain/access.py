"""Who may ask what: keys looked up by hash, allowlists, limits and budgets, and the audit trail.

`AccessControl` is the one object the transport asks (appliance/api/access.py): it finds a
key by the hash of what the client sent (in memory: `KeyDirectory` holds the catalog's
static keys and a snapshot of the store's, replaced whole by the background sync), checks
its allowlists, and counts it against its limits (`Limiter`). It is also a `Recorder`:
each chat or embedding outcome settles the tokens reserved for its request and adds its
cost to the key's budget, streams included (their outcome is recorded when they end).

Nothing here waits on the network; the store is reached only by the sync task
(appliance/access/sync.py) and the audit writer behind `AuditSink`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from appliance.domain.errors import Forbidden, Unauthorized
from appliance.domain.keys import KeyRecord, KeySpec
from appliance.domain.limits import Limiter, Reservation
from appliance.domain.records import ChatOutcome, EmbeddingOutcome, RetrievalOutcome

log = logging.getLogger(__name__)

OPEN_RESERVATIONS_MAX: Final = 100_000   # requests of limited keys awaiting their outcome, at most
RESERVATION_TTL_S: Final = 3600.0        # an outcome that never came: its reservation is dropped


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit trail (never a secret): `key.created`, `key.revoked`,
    `key.rotated`, `admin.call` or `denied`."""

    event: str
    key: str | None
    status: int | None = None
    method: str | None = None
    path: str | None = None
    correlation_id: str | None = None
    actor: str | None = None          # who did it: an admin key's name, or `cli`
    detail: Mapping[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


class AuditSink(Protocol):
    """Takes audit events; must return at once and never raise (writes are batched)."""

    def record(self, event: AuditEvent) -> None:
        ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, on `req.context.caller`. `key` is None only while the gateway has no
    keys at all (then everything but the admin API is open, as before keys existed)."""

    key: KeyRecord | None

    @property
    def name(self) -> str | None:
        return self.key.name if self.key is not None else None

    @property
    def admin(self) -> bool:
        return self.key is not None and self.key.admin

    @property
    def models(self) -> tuple[str, ...]:
        return self.key.models if self.key is not None else ()

    @property
    def workspaces(self) -> tuple[str, ...]:
        return self.key.workspaces if self.key is not None else ()


ANONYMOUS: Final = Caller(None)


def _limited(keys: Iterable[KeyRecord]) -> dict[str, KeyRecord]:
    """The usable keys with rpm, tpm or a budget, by name: what the sync keeps every worker told of."""
    return {k.name: k for k in keys if k.limited and k.revoked_at is None}


class KeyDirectory:
    """Keys by SHA-256: the catalog's (fixed) and the store's (replaced whole by the sync).
    With a store, keys are required until it has answered once (`loaded`) and said it has none.
    `limited`: the usable keys with limits or a budget, by name (the sync reads their totals)."""

    def __init__(self, static: Iterable[KeyRecord] = (), *, store: bool = False, always: bool = False) -> None:
        self._always = always         # keys required even when there are none (a public address)
        self._static = {k.sha256: k for k in static}
        self._stored: dict[str, KeyRecord] = {}
        self._all = dict(self._static)
        self.limited = _limited(self._all.values())
        self._store = store
        self.loaded = False           # whether the store has answered once

    def replace_stored(self, records: Iterable[KeyRecord]) -> None:
        self._stored = {k.sha256: k for k in records}
        self._all = self._stored | self._static
        self.limited = _limited(self._all.values())
        self.loaded = True

    @property
    def waiting(self) -> bool:
        """Whether there is a store that has not answered yet."""
        return self._store and not self.loaded

    def find(self, sha256: str) -> KeyRecord | None:
        return self._all.get(sha256)

    @property
    def required(self) -> bool:
        """Whether any key exists (revoked ones count: the store has keys, so callers need one)."""
        return self._always or bool(self._all) or (self._store and not self.loaded)

    def names(self) -> list[str]:
        return sorted({k.name for k in self._all.values()})


class AccessControl:
    """Authentication, allowlists, limits and budgets for every request (module docstring).
    A chat's spend is its outcome's `cost_usd`: token prices, or a local backend's GPU-seconds
    at its price per GPU-hour (`ChatService`), the same number the usage rows add up."""

    def __init__(self, directory: KeyDirectory, limiter: Limiter, audit: AuditSink, *,
                 default_reserve_tokens: int = 512,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.limiter = limiter
        self.audit = audit
        self._default_reserve = default_reserve_tokens
        self._clock = clock
        self._open: dict[str, tuple[KeyRecord, Reservation | None, float]] = {}

    @property
    def required(self) -> bool:
        return self.directory.required

    def authenticate(self, sha256: str | None) -> Caller:
        """The caller whose secret hashes to `sha256` (None: no key sent). Raises Unauthorized
        for a missing, unknown, revoked or expired key while any key exists."""
        if not self.directory.required:
            return ANONYMOUS
        if sha256 is None:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        key = self.directory.find(sha256)
        if key is None:
            if self.directory.waiting:
                raise Unauthorized("Invalid API key (keys are kept in PostgreSQL, which has not answered yet)")
            raise Unauthorized("Invalid API key")
        if key.revoked_at is not None:
            raise Unauthorized(f"API key '{key.name}' has been revoked")
        if key.expires_at is not None and key.expired(self._clock()):
            raise Unauthorized(f"API key '{key.name}' has expired")
        return Caller(key)

    def admit(self, caller: Caller, correlation_id: str) -> None:
        """Count the request against its key's limits (RateLimited, InsufficientQuota)."""
        key = caller.key
        if key is None or not key.limited:
            return
        self.limiter.admit(key)
        self._track(correlation_id, key, None)

    def check_model(self, caller: Caller, model: str) -> None:
        key = caller.key
        if key is not None and key.models and not key.allows_model(model):
            raise Forbidden(f"Key '{key.name}' may not use the model '{model}'", param="model",
                            code="model_not_allowed")

    def check_workspace(self, caller: Caller, workspace: str) -> None:
        key = caller.key
        if key is not None and key.workspaces and not key.allows_workspace(workspace):
            raise Forbidden(f"Key '{key.name}' may not use the workspace '{workspace}'", param="workspace",
                            code="workspace_not_allowed")

    def reserve(self, caller: Caller, correlation_id: str, max_tokens: int | None, prompt_tokens: int) -> None:
        """Before a chat call: its prompt (estimated) and `max_tokens` (or the default) are
        counted against tpm until its outcome settles them (RateLimited when they do not fit)."""
        key = caller.key
        if key is None or key.tpm is None:
            return
        wanted = prompt_tokens + (max_tokens if max_tokens is not None else self._default_reserve)
        reservation = self.limiter.reserve(key, wanted)
        self._track(correlation_id, key, reservation)

    def headers(self, caller: Caller) -> list[tuple[str, str]]:
        key = caller.key
        if key is None or (key.rpm is None and key.tpm is None):
            return []
        return self.limiter.headers(key)

    def _track(self, cid: str, key: KeyRecord, reservation: Reservation | None) -> None:
        if len(self._open) >= OPEN_RESERVATIONS_MAX:
            self.sweep(force=True)
        self._open[cid] = (key, reservation, self._clock())

    def release(self, correlation_id: str) -> None:
        """A request that ended without an outcome (refused before its call): its reserved
        tokens are given back."""
        entry = self._open.pop(correlation_id, None)
        if entry is not None and entry[1] is not None:
            self.limiter.settle(entry[0], entry[1], 0, 0.0)

    def sweep(self, force: bool = False) -> None:
        """Drop reservations whose outcome never came (older than RESERVATION_TTL_S; with
        `force`, the older half)."""
        now = self._clock()
        horizon = now - RESERVATION_TTL_S
        if force:
            stamps = sorted(t for _, _, t in self._open.values())
            horizon = max(horizon, stamps[len(stamps) // 2]) if stamps else horizon
        for cid in [c for c, (_, _, t) in self._open.items() if t <= horizon]:
            self.release(cid)

    # -- Recorder: outcomes settle what was reserved --

    def chat(self, outcome: ChatOutcome) -> None:
        entry = self._open.pop(outcome.correlation_id, None)
        if entry is not None:
            self.limiter.settle(entry[0], entry[1], outcome.usage.total_tokens, outcome.cost_usd)

    def embedding(self, outcome: EmbeddingOutcome) -> None:
        entry = self._open.pop(outcome.correlation_id, None)
        if entry is not None:
            self.limiter.settle(entry[0], entry[1], outcome.tokens, 0.0)

    def retrieval(self, outcome: RetrievalOutcome) -> None:
        return None


class KeyAdmin(Protocol):
    """Key administration (the CLI and `/admin/keys`); each change writes its audit row.
    A secret is returned once, by `create` and `rotate`, and never stored."""

    async def list_keys(self) -> list[KeyRecord]:
        ...

    async def create(self, spec: KeySpec, *, actor: str, secret: str | None = None) -> tuple[KeyRecord, str]:
        ...

    async def revoke(self, name: str, *, actor: str) -> KeyRecord:
        ...

    async def rotate(self, name: str, *, actor: str) -> tuple[KeyRecord, str]:
        ...


class NullAudit:
    """Records nothing (a gateway built without access wiring, unit tests)."""

    def record(self, event: AuditEvent) -> None:
        return None


def open_access() -> AccessControl:
    """Access for a gateway without any key: everything but the admin API open."""
    return AccessControl(KeyDirectory(), Limiter(), NullAudit())
