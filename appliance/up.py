"""`appliance up`: everything on one machine, for a newcomer, a laptop or CI.

A clear sequence of steps, each started in order and stopped in reverse on exit (Ctrl-C):
embedded PostgreSQL + pgvector (migrated), embedded NATS JetStream and the persister, the
optional local LLM (launched first, so its model loads meanwhile; waited for here), then the
gateway in the foreground. The host's inference service (the embedding models) is launched
first too, beside the local LLM: its models load while PostgreSQL is initialised, instead of
after it while the gateway's worker waits for them (docs/benchmarks.md, issue 18). Once
/readyz answers, it prints the API base, the web UI and one request to paste into a shell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from appliance import children, logs
from appliance.config import Settings
from appliance.db.migrate import migrate, migrations_dir
from appliance.embedded.local_llm import MODEL_ID, LocalLLMStart, begin_local_llm, finish_local_llm
from appliance.embedded.nats import EmbeddedNats
from appliance.embedded.ports import port_free
from appliance.embedded.postgres import database_url
from appliance.inference import host_service
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



def start_inference(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    """The host's inference service before PostgreSQL, so its models load during initdb.

    The same child `serve` would start (`host_service.for_settings`), with the environment
    `serve` gives it; `serve` then finds `inference_url` set and starts none of its own, and
    the stack stops it after the gateway's workers, as `serve` would. Returns the settings
    unchanged when the workers use their own models or a remote service."""
    supervisor = host_service.for_settings(settings)
    if supervisor is None:
        return settings
    os.environ.pop("APPLIANCE_CONFIG", None)   # the child reads the validated catalog, as in serve
    os.environ.update(worker_env(settings))
    supervisor.start()
    stack.callback(supervisor.stop)
    # How the workers learn it (they inherit this environment), as for a service named by the user.
    os.environ["APPLIANCE_INFERENCE_URL"] = supervisor.url
    # Nor do they wait for it at start (`host_service_wait_s`): a chat needs no embedding, and on
    # a first run its imports and models can take longer than PostgreSQL and the worker together;
    # an embedding asked before it answers is served in process (inference/wiring.py).
    os.environ.setdefault("APPLIANCE_INFERENCE__HOST_SERVICE_WAIT_S", "0")
    _say(f"inference   embedding models loading in a child, at {supervisor.url}")
    return settings.model_copy(update={"inference_url": supervisor.url})


def launch_llm(settings: Settings, stack: contextlib.ExitStack) -> LocalLLMStart:
    """The local LLM's child first, so its model loads while PostgreSQL and NATS start."""
    started = begin_local_llm(settings, log_file=settings.state_dir / "local-llm.log")
    stack.callback(started.stop)
    return started


def await_llm(settings: Settings, started: LocalLLMStart) -> Settings:
    _, settings, line = finish_local_llm(started, settings)
    _say(line)
    return settings


def _ui_shipped() -> bool:
    """Whether this install carries the web UI's files (served by the gateway at /ui/)."""
    return (Path(__file__).parent / "ui" / "index.html").is_file()


def ready_lines(settings: Settings, elapsed_s: float, status: str = "ready") -> list[str]:
    """What a person needs once everything answers: the API base, the web UI (when this
    install has it) and one request to paste into a shell."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{settings.port}"
    models = [m.id for m in settings.catalog.models]
    model = MODEL_ID if MODEL_ID in models else (models[0] if models else None)
    key = ["-H", "Authorization: Bearer YOUR_KEY"] if settings.catalog.api_keys else []
    if model is None:
        curl = ["curl", "-s", f"{base}/v1/models", *key]
    else:
        # max_tokens: a small model asked for no limit can ramble until its context is full
        # (2048 tokens, minutes on a CPU), and the first thing a newcomer sees should not be that.
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                           "max_tokens": 64})
        curl = ["curl", "-s", f"{base}/v1/chat/completions", "-H", "Content-Type: application/json", *key,
                "-d", body]
    lines = [f"appliance up: {status} in {elapsed_s:.1f} s",
             f"appliance up:   API base  {base}/v1  (any OpenAI client; api_key: "
             + ("one of the catalog's keys)" if key else "any string)")]
    if _ui_shipped():
        lines.append(f"appliance up:   web UI    {base}/ui/")
    lines += ["appliance up:   try it:", shlex.join(curl)]
    return lines


def _announce_when_ready(settings: Settings, started: float, give_up_s: float = 300.0) -> None:
    """Print `ready_lines` once /readyz says ready (or, after a minute, once it answers at
    all, with what it said), from a daemon thread while the gateway serves in the foreground."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/readyz"

    def poll() -> None:
        while time.monotonic() - started < give_up_s:
            status = None
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    status = "ready" if resp.status == 200 else None
            except urllib.error.HTTPError as exc:
                if time.monotonic() - started > 60:
                    status = f"serving, but /readyz says {exc.code}"
            except OSError:
                pass
            if status is not None:
                for line in ready_lines(settings, time.monotonic() - started, status):
                    print(line, flush=True)
                return
            time.sleep(0.1)

    threading.Thread(target=poll, name="announce-ready", daemon=True).start()


def run(settings: Settings) -> int:
    """Start every step, serve the gateway until SIGINT/SIGTERM, then stop in reverse."""
    started = time.monotonic()
    logs.configure(settings.log_level)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _say(f"state       {Path(settings.state_dir).resolve()}")
    with contextlib.ExitStack() as stack:
        llm = launch_llm(settings, stack)
        settings = start_inference(settings, stack)
        settings = start_postgres(settings, stack)
        apply_migrations(settings)
        if settings.events.enabled:
            settings = start_nats(settings, stack)
            start_persister(settings, stack)
        settings = await_llm(settings, llm)
        models = ", ".join(m.id for m in settings.catalog.models) or "none in the catalog"
        _say(f"gateway     http://{settings.host}:{settings.port}/v1  (models: {models})")
        _say("Ctrl-C stops everything")
        _announce_when_ready(settings, started)
        code = serve(settings)
    _say("stopped")
    return code
