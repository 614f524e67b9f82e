"""`appliance up`: everything on one machine, for a newcomer, a laptop or CI.

A clear sequence of steps, each started in order and stopped in reverse on exit (Ctrl-C):
embedded PostgreSQL + pgvector (migrated), the optional local LLM, then the gateway in the
foreground. Later roles (NATS, the persister) join as further steps.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from appliance import logs
from appliance.config import Settings
from appliance.db.migrate import migrate, migrations_dir
from appliance.embedded.postgres import EmbeddedPostgres
from appliance.inference.local_llm import start_local_llm
from appliance.server import serve

log = logging.getLogger(__name__)


def _say(line: str) -> None:
    print(f"appliance up: {line}", flush=True)


def _has_migrations() -> bool:
    try:
        return any(migrations_dir().glob("*.sql"))
    except FileNotFoundError:
        return False


def start_postgres(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    if settings.database_url:
        _say(f"postgresql  {settings.database_url.split('@')[-1]} (APPLIANCE_DATABASE_URL)")
        return settings
    server = EmbeddedPostgres(settings.state_dir / "postgres")
    url = server.start()
    stack.callback(server.stop)
    _say(f"postgresql  embedded, data in {server.data_dir}")
    return settings.model_copy(update={"database_url": url})


def apply_migrations(settings: Settings) -> None:
    if settings.database_url and _has_migrations():
        applied = migrate(settings.database_url)
        _say(f"migrations  {len(applied)} applied" if applied else "migrations  up to date")


def start_llm(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    server, settings, line = start_local_llm(settings, log_file=settings.state_dir / "local-llm.log")
    if server is not None:
        stack.callback(server.stop)
    _say(line)
    return settings


def run(settings: Settings) -> int:
    """Start every step, serve the gateway until SIGINT/SIGTERM, then stop in reverse."""
    logs.configure(settings.log_level)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _say(f"state       {Path(settings.state_dir).resolve()}")
    with contextlib.ExitStack() as stack:
        settings = start_postgres(settings, stack)
        apply_migrations(settings)
        settings = start_llm(settings, stack)
        models = ", ".join(m.id for m in settings.catalog.models) or "none in the catalog"
        _say(f"gateway     http://{settings.host}:{settings.port}/v1  (models: {models})")
        _say("Ctrl-C stops everything")
        code = serve(settings)
    _say("stopped")
    return code
