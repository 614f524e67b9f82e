"""Composition of stored Responses: the archive over PostgreSQL when a database is configured,
or over nothing (created, not kept; continuations refused with a 400 naming the setting)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Settings
from appliance.db.response_store import PgResponseStore
from appliance.domain.responses import ResponseArchive
from appliance.feature import Feature


@dataclass(frozen=True, slots=True)
class StoredResponses:
    archive: ResponseArchive
    feature: Feature | None


def build_responses(settings: Settings) -> StoredResponses:
    if not settings.database_url:
        return StoredResponses(ResponseArchive(None), None)
    cfg = settings.responses
    store = PgResponseStore(settings.database_url, max_size=cfg.db_pool_max,
                            breaker_cooldown_s=settings.knowledge.db_breaker_cooldown_s,
                            breaker_max_cooldown_s=settings.knowledge.db_breaker_max_cooldown_s,
                            synchronous_commit=cfg.synchronous_commit)
    # The pool opens without waiting: a PostgreSQL that is down at start degrades only this.
    return StoredResponses(ResponseArchive(store, max_chain=cfg.max_chain),
                     Feature("responses", start=store.open, close=store.close))
