"""`appliance up`: everything on one machine, for a newcomer, a laptop or CI.

A clear sequence of steps, each started in order and stopped in reverse on exit (Ctrl-C):
embedded PostgreSQL + pgvector (migrated), embedded NATS JetStream and the persister, the
optional local LLM, then the gateway in the foreground.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from pathlib import Path

from appliance import children, logs
from appliance.config import Settings
from appliance.db.migrate import migrate, migrations_dir
from appliance.embedded.local_llm import start_local_llm
from appliance.embedded.nats import EmbeddedNats
from appliance.embedded.ports import port_free
from appliance.embedded.postgres import database_url
from appliance.inference.model_files import embedding_dim
from appliance.server import serve, worker_env

log = logging.getLogger(__name__)


def _say(line: str) -> None:
    print(f"appliance up: {line}", flush=True)


def _has_migrations() -> bool:
    try:
        return any(migrations_dir().glob("*.sql"))
    except FileNotFoundError:
        return False


def start_postgres(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    url, server = database_url(settings)
    if server is None:
        _say(f"postgresql  {url.split('@')[-1]} (APPLIANCE_DATABASE_URL)")
        return settings
    stack.callback(server.stop)
    _say(f"postgresql  embedded, data in {server.data_dir}")
    return settings.model_copy(update={"database_url": url})


def apply_migrations(settings: Settings) -> None:
    if settings.database_url and _has_migrations():
        applied = migrate(settings.database_url, {"embedding_dim": embedding_dim(settings)})
        _say(f"migrations  {len(applied)} applied" if applied else "migrations  up to date")


def start_nats(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    if settings.nats_url:
        _say(f"nats        {settings.nats_url} (APPLIANCE_NATS_URL)")
        return settings
    port = 4222 if port_free(4222) else 0
    server = EmbeddedNats(settings.state_dir / "nats", port=port)
    url = server.start()
    stack.callback(server.stop)
    _say(f"nats        embedded JetStream at {url}, store in {server.store_dir}")
    return settings.model_copy(update={"nats_url": url})


def start_persister(settings: Settings, stack: contextlib.ExitStack) -> None:
    """The persister as a child process: its own event loop, its own crash domain."""
    env = children.environment(**worker_env(settings), PYTHONUNBUFFERED="1")
    log_file = open(settings.state_dir / "persister.log", "ab")  # noqa: SIM115 - closed by the stack
    stack.callback(log_file.close)
    child = subprocess.Popen(children.command("persist"), env=env, stdout=log_file,
                             stderr=subprocess.STDOUT)

    def stop() -> None:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
    stack.callback(stop)
    _say(f"persister   events -> postgresql, log in {settings.state_dir / 'persister.log'}")



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
        if settings.events.enabled:
            settings = start_nats(settings, stack)
            start_persister(settings, stack)
        settings = start_llm(settings, stack)
        models = ", ".join(m.id for m in settings.catalog.models) or "none in the catalog"
        _say(f"gateway     http://{settings.host}:{settings.port}/v1  (models: {models})")
        _say("Ctrl-C stops everything")
        code = serve(settings)
    _say("stopped")
    return code
