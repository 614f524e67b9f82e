"""Composition of access: the catalog's static keys, the store's keys (when PostgreSQL is
configured), one limiter and audit writer per worker, and the sync between them."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from appliance.access.audit import AuditWriter
from appliance.access.store import PgAccessStore
from appliance.access.sync import AccessSync
from appliance.catalog import ApiKeyConfig
from appliance.config import ConfigError, Settings
from appliance.domain.access import AccessControl, KeyDirectory
from appliance.domain.keys import KeyRecord
from appliance.domain.limits import Limiter
from appliance.feature import Feature


@dataclass(frozen=True, slots=True)
class Access:
    control: AccessControl
    store: PgAccessStore | None      # the key administration behind /admin/keys
    feature: Feature | None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def static_key(k: ApiKeyConfig) -> KeyRecord:
    return KeyRecord(name=k.name, sha256=k.sha256, shown="(catalog)", models=k.models, workspaces=k.workspaces,
                     rpm=k.rpm, tpm=k.tpm, budget_usd=k.budget_usd, period=k.period, admin=k.admin,
                     source="catalog")


def build_access(settings: Settings) -> Access:
    cfg = settings.access
    audit = AuditWriter(cfg.audit_queue_max if settings.database_url else 0)
    # A public address never answers without a key, whatever the store says (see check_exposure).
    public = not is_loopback(settings.host) and not settings.allow_no_keys
    directory = KeyDirectory([static_key(k) for k in settings.catalog.api_keys], store=bool(settings.database_url),
                             always=public)
    control = AccessControl(directory, Limiter(), audit, default_reserve_tokens=cfg.default_reserve_tokens)
    if not settings.database_url:
        return Access(control, None, None)
    store = PgAccessStore(settings.database_url)
    sync = AccessSync(store, control, audit, sync_s=cfg.sync_s, keys_poll_s=cfg.keys_poll_s,
                      keep_s=cfg.usage_retention_s, snapshot=settings.state_dir / "access" / "keys.json")
    return Access(control, store, Feature("access", start=sync.start, close=sync.close))


def stored_key_count(url: str) -> int | None:
    """Active keys in the store, or None when it cannot say (unreachable, not migrated)."""
    from appliance.domain.errors import DependencyUnavailable

    async def count() -> int:
        store = PgAccessStore(url, max_size=1)
        await store.open()
        try:
            return await store.active_keys()
        finally:
            await store.close()

    try:
        return asyncio.run(count())
    except DependencyUnavailable:
        return None


def check_exposure(settings: Settings, loopback: bool) -> None:
    """`serve` on a non-loopback address needs a key somewhere (the catalog or the store),
    unless `allow_no_keys`: a ConfigError of one line naming the setting otherwise."""
    if loopback or settings.allow_no_keys or settings.catalog.api_keys:
        return
    stored = stored_key_count(settings.database_url) if settings.database_url else 0
    if stored == 0:
        raise ConfigError(f"config error: refusing to serve on {settings.host} with no API keys: create one with "
                          "`appliance keys create NAME` (or [[api_keys]] in the catalog), or set "
                          "APPLIANCE_ALLOW_NO_KEYS=true to serve everyone who can reach it")
