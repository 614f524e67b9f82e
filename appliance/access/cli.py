"""`appliance keys create|list|revoke|rotate`: key administration against PostgreSQL
(APPLIANCE_DATABASE_URL, or the embedded server under the state dir, as `migrate` uses).

`create` and `rotate` print the new key once, as the last line of their output; nothing
else ever shows a secret. Every change is written to `audit_log` with the actor `cli`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from appliance.access.store import PgAccessStore
from appliance.config import Settings
from appliance.domain.errors import ApplianceError
from appliance.domain.keys import KeyRecord, KeySpec

T = TypeVar("T")


def _when(value: float | None) -> str:
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


def _status(k: KeyRecord) -> str:
    if k.revoked_at:
        return "revoked"
    return "expired" if k.expired() else "active"


def table(keys: list[KeyRecord]) -> str:
    head = ("NAME", "KEY", "STATUS", "ADMIN", "MODELS", "WORKSPACES", "RPM", "TPM", "BUDGET", "EXPIRES")
    rows = [head] + [(k.name, k.shown + "...", _status(k), "yes" if k.admin else "", ",".join(k.models) or "*",
                      ",".join(k.workspaces) or "*", str(k.rpm or "-"), str(k.tpm or "-"),
                      f"${k.budget_usd:g}/{k.period}" if k.budget_usd else "-", _when(k.expires_at)) for k in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _limits(k: KeyRecord) -> str:
    parts = [f"models {','.join(k.models)}" if k.models else "", f"workspaces {','.join(k.workspaces)}" if k.workspaces else "",
             f"{k.rpm} rpm" if k.rpm else "", f"{k.tpm} tpm" if k.tpm else "",
             f"${k.budget_usd:g} per {k.period}" if k.budget_usd else "", f"expires {_when(k.expires_at)}" if k.expires_at else "",
             "admin" if k.admin else ""]
    return ", ".join(p for p in parts if p) or "no limits"


async def _run(store: PgAccessStore, job: Callable[[PgAccessStore], Awaitable[T]]) -> T:
    await store.open()
    try:
        return await job(store)
    finally:
        await store.close()


def run(settings: Settings, args: argparse.Namespace) -> int:
    from appliance.embedded.postgres import database_url

    url, server = database_url(settings)
    store = PgAccessStore(url, connect_timeout_s=5.0)
    try:
        return _command(store, args)
    except ApplianceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()


def _command(store: PgAccessStore, args: argparse.Namespace) -> int:
    command = args.keys_command
    if command == "list":
        print(table(asyncio.run(_run(store, lambda s: s.list_keys()))))
        return 0
    if command == "revoke":
        record = asyncio.run(_run(store, lambda s: s.revoke(args.name, actor="cli")))
        print(f"revoked key {record.name} ({record.shown}...): refused by every gateway within seconds")
        return 0
    if command == "rotate":
        record, secret = asyncio.run(_run(store, lambda s: s.rotate(args.name, actor="cli")))
        print(f"rotated key {record.name}: the old key stops working within seconds ({_limits(record)})")
        print("the new key, shown once:")
        print(secret)
        return 0
    secret_in = sys.stdin.readline().strip() if args.from_stdin else None
    spec = KeySpec(args.name, tuple(args.models), tuple(args.workspaces), args.rpm, args.tpm, args.budget_usd,
                   args.period, args.expires, args.admin)
    record, secret = asyncio.run(_run(store, lambda s: s.create(spec, actor="cli", secret=secret_in)))
    print(f"created key {record.name} ({_limits(record)})")
    if secret_in is None:
        print("the key, shown once (clients send it as 'Authorization: Bearer <key>'):")
        print(secret)
    return 0
