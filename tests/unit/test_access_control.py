"""AccessControl without sockets: who is let in while the store has not answered, expired and
revoked keys, allowlists, and a reservation given back or settled by the outcome."""

from __future__ import annotations

import pytest

from appliance.domain.access import ANONYMOUS, AccessControl, KeyDirectory, NullAudit
from appliance.domain.errors import Forbidden, RateLimited, Unauthorized
from appliance.domain.keys import KeyRecord, digest
from appliance.domain.limits import Limiter
from appliance.domain.records import ChatOutcome, Usage

SECRET = "appl-unit-0123456789abcdef"


def control(*keys: KeyRecord, store: bool = False) -> AccessControl:
    return AccessControl(KeyDirectory(keys, store=store), Limiter(), NullAudit())


def test_no_keys_is_open_but_a_silent_store_is_not() -> None:
    assert control().authenticate(None) is ANONYMOUS
    waiting = control(store=True)
    with pytest.raises(Unauthorized, match="not answered yet"):
        waiting.authenticate(digest(SECRET))
    waiting.directory.replace_stored([])     # it answered: no keys
    assert waiting.authenticate(None) is ANONYMOUS
    public = AccessControl(KeyDirectory(always=True), Limiter(), NullAudit())   # a non-loopback bind
    public.directory.replace_stored([])
    with pytest.raises(Unauthorized):
        public.authenticate(None)


def test_revoked_expired_and_allowlists() -> None:
    revoked = KeyRecord("old", digest("appl-old-0123456789abcdef"), revoked_at=1.0)
    expired = KeyRecord("gone", digest("appl-gone-0123456789abcdef"), expires_at=1.0)
    key = KeyRecord("k", digest(SECRET), models=("qwen3-*",), workspaces=("home",))
    access = control(revoked, expired, key)
    with pytest.raises(Unauthorized, match="revoked"):
        access.authenticate(revoked.sha256)
    with pytest.raises(Unauthorized, match="expired"):
        access.authenticate(expired.sha256)
    caller = access.authenticate(key.sha256)
    access.check_model(caller, "qwen3-8b")
    with pytest.raises(Forbidden):
        access.check_model(caller, "gpt-4o")
    with pytest.raises(Forbidden):
        access.check_workspace(caller, "work")


def test_reservations_are_settled_or_given_back() -> None:
    key = KeyRecord("k", digest(SECRET), tpm=1000)
    access = control(key)
    caller = access.authenticate(key.sha256)
    access.reserve(caller, "c1", 900, 0)
    with pytest.raises(RateLimited):
        access.reserve(caller, "c2", 900, 0)
    access.release("c1")                      # refused before its call: all 900 back
    access.reserve(caller, "c3", 900, 0)
    access.chat(ChatOutcome("c3", "m", "m", "b", "direct", False, (), "", None, Usage(5, 5)))
    assert dict(access.headers(caller))["x-ratelimit-remaining-tokens"] == "990"


async def test_listings_show_a_key_the_models_and_routers_it_may_use() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from appliance.api.access import may_see_model, visible_models
    from appliance.domain.access import Caller
    from appliance.domain.models import ModelDirectory
    from appliance.domain.routing import ModelEntry, ModelRouter

    models = ModelRouter([ModelEntry(m, ("b",), m, "x") for m in ("coder", "general", "qwen3-8b")], [])
    directory = ModelDirectory(models, {}, ttl_s=60, virtual=[{"id": "auto", "object": "model", "router": {}}])
    listing = await directory.listing()

    def seen(key: KeyRecord | None) -> list[str]:
        req = cast(Any, SimpleNamespace(context=SimpleNamespace(caller=Caller(key))))
        shown = [m["id"] for m in visible_models(req, listing)]
        assert all(may_see_model(req, m["id"]) == (m["id"] in shown) for m in listing)
        return shown

    assert seen(None) == seen(KeyRecord("any", "h")) == ["coder", "general", "qwen3-8b", "auto"]
    assert seen(KeyRecord("k", "h", models=("auto", "qwen3-*"))) == ["qwen3-8b", "auto"]   # a router it may call
    assert seen(KeyRecord("k", "h", models=("coder", "general"))) == ["coder", "general"]  # not the router over them
