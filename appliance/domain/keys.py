"""API keys as values: what a key may do, how a new one is made, and which are too weak to use.

A key's secret is shown once, when it is made; everything else keeps its SHA-256. Secrets
start with `PREFIX`, so a leaked one is found by `grep -r appl-`. A key's allowlists are
glob patterns (`qwen3-*`) over model names and exact workspace names; empty means any.
"""

from __future__ import annotations

import calendar
import fnmatch
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

from appliance.domain.errors import InvalidRequest

PREFIX: Final = "appl-"
SHOWN_CHARS: Final = 9          # what `keys list` shows of a key: the prefix and four characters
MIN_LENGTH: Final = 16          # a secret given from outside (`keys create --from-stdin`) at least
Period = Literal["day", "month"]

# Keys that example configs, tutorials and other gateways' defaults use: refused as secrets,
# and their hashes refused in the catalog's [[api_keys]].
WEAK: Final = frozenset({
    "sk-1234", "sk-12345", "sk-123456", "sk-1234567890", "sk-test", "sk-xxx", "sk-xxxx", "sk-your-key",
    "sk-your-api-key", "sk-no-key-required", "sk-dummy", "sk-fake", "sk-local", "sk-secret", "sk-admin",
    "1234", "12345", "123456", "12345678", "123456789", "1234567890", "changeme", "change-me", "password",
    "passw0rd", "secret", "admin", "test", "token", "apikey", "api-key", "api_key", "your-api-key",
    "your_api_key", "letmein", "qwerty", "default", "dummy", "none", "empty", "ollama", "lm-studio",
    "lmstudio", "vllm", "llama", "openai", "anything", "key", "mykey", "my-key",
})


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


WEAK_DIGESTS: Final = frozenset(digest(w) for w in WEAK) | frozenset(digest(w.upper()) for w in WEAK)


def new_secret() -> str:
    """A fresh key: the prefix and 256 random bits (URL-safe base64)."""
    return PREFIX + secrets.token_urlsafe(32)


def weakness(secret: str) -> str | None:
    """Why `secret` may not be a key, or None."""
    if secret.strip().lower() in WEAK:
        return "it is a well-known example key"
    if len(secret) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(secret)) < 6:
        return "it repeats too few characters"
    return None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as the gateway holds it (never its secret)."""

    name: str
    sha256: str
    shown: str = ""                      # the first characters of the secret, for `keys list`
    models: tuple[str, ...] = ()         # glob patterns; empty: any model
    workspaces: tuple[str, ...] = ()     # names; empty: any workspace
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    period: Period = "month"
    expires_at: float | None = None      # unix time
    admin: bool = False
    created_at: float | None = None
    rotated_at: float | None = None
    revoked_at: float | None = None
    source: Literal["store", "catalog"] = "store"

    def allows_model(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    def allows_workspace(self, workspace: str) -> bool:
        return not self.workspaces or workspace in self.workspaces

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at

    @property
    def limited(self) -> bool:
        """Whether anything is counted for this key (rpm, tpm or a budget)."""
        return self.rpm is not None or self.tpm is not None or self.budget_usd is not None

    def public(self) -> dict[str, object]:
        """What `keys list` and `GET /admin/keys` show: everything but the hash."""
        return {"name": self.name, "shown": self.shown, "models": list(self.models),
                "workspaces": list(self.workspaces), "rpm": self.rpm, "tpm": self.tpm,
                "budget_usd": self.budget_usd, "period": self.period if self.budget_usd is not None else None,
                "expires_at": self.expires_at, "admin": self.admin, "created_at": self.created_at,
                "rotated_at": self.rotated_at, "revoked_at": self.revoked_at, "source": self.source}


def period_key(period: Period, now: float) -> str:
    """The budget period `now` falls in, in UTC: `2026-12-01` (day) or `2026-12` (month)."""
    t = time.gmtime(now)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}" if period == "day" else f"{t.tm_year:04d}-{t.tm_mon:02d}"


def period_end(period: Period, now: float) -> float:
    """When the budget period `now` falls in ends (unix time, UTC)."""
    t = time.gmtime(now)
    if period == "day":
        return float(int(now) - (t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec) + 86400)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)))


NAME_CHARS: Final = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What `keys create` (CLI or `POST /admin/keys`) asks for, checked on construction."""

    name: str
    models: tuple[str, ...] = ()
    workspaces: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    period: Period = "month"
    expires_at: float | None = None
    admin: bool = False

    def __post_init__(self) -> None:
        if not NAME_CHARS.match(self.name):
            raise InvalidRequest("A key's name is 1-64 letters, digits or . _ @ -", param="name")
        for field_name in ("rpm", "tpm"):
            value = getattr(self, field_name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise InvalidRequest(f"'{field_name}' must be a positive integer", param=field_name)
        if self.budget_usd is not None and (isinstance(self.budget_usd, bool)
                                            or not isinstance(self.budget_usd, int | float) or self.budget_usd <= 0):
            raise InvalidRequest("'budget_usd' must be a positive number", param="budget_usd")
        if self.period not in ("day", "month"):
            raise InvalidRequest("'period' must be 'day' or 'month'", param="period")
        if self.expires_at is not None and self.expires_at <= time.time():
            raise InvalidRequest("'expires' must be in the future", param="expires")
        for field_name in ("models", "workspaces"):
            values = getattr(self, field_name)
            if not all(isinstance(v, str) and 0 < len(v) <= 256 for v in values):
                raise InvalidRequest(f"'{field_name}' must be a list of names", param=field_name)
