"""`appliance` command line: one package, several roles.

Each subcommand's work lives in its own module, imported only when that command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance import __version__
from appliance.config import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """Settings from the environment, with the command line's non-empty options on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(getattr(args, "config", None), None, **given)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    cat = settings.catalog
    print(f"config ok: {len(cat.backends)} backends, {len(cat.routes)} routes, {len(cat.models)} models"
          + (f" ({settings.config})" if settings.config else " (no catalog file)"))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from appliance.server import serve

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    return serve(settings)


def cmd_inference(args: argparse.Namespace) -> int:
    from appliance.inference.service import main as serve_inference

    return serve_inference(_settings(args), listen=args.listen, health_listen=args.health_listen)


def cmd_up(args: argparse.Namespace) -> int:
    from appliance.server import prepare_metrics

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    prepare_metrics(settings)  # before `up` imports what counts
    from appliance.up import run

    return run(settings)


def cmd_migrate(args: argparse.Namespace) -> int:
    from appliance.db.migrate import migrate
    from appliance.embedded.postgres import database_url
    from appliance.inference.model_files import embedding_dim

    settings = _settings(args)
    url, server = database_url(settings)
    try:
        applied = migrate(url, {"embedding_dim": embedding_dim(settings)})
    finally:
        if server is not None:
            server.stop()
    print(f"migrations applied: {', '.join(applied)}" if applied else "migrations: up to date")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from appliance.rag.ingest import run

    return run(_settings(args), args.paths, args.workspace)


def _add_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, help="files or directories (.md .txt .rst .html)")
    p.add_argument("--workspace", "-w", required=True, help="workspace to put the documents in")


def cmd_persist(args: argparse.Namespace) -> int:
    from appliance.events.persister import run

    return run(_settings(args))


def cmd_relay(args: argparse.Namespace) -> int:
    from appliance.events.relay_process import run

    return run(_settings(args))


def cmd_usage(args: argparse.Namespace) -> int:
    from appliance.db.usage_report import run

    return run(_settings(args), args.group_by, args.since, args.until, as_json=args.json)


def _add_usage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-by", default="key", help="key, model, backend or day, or several comma-separated (default key)")
    p.add_argument("--since", help="ISO 8601 date or time, or a time ago: 24h, 7d (default: all kept)")
    p.add_argument("--until", help="ISO 8601 date or time, or a time ago (default: now)")
    p.add_argument("--json", action="store_true", help="print what GET /admin/usage answers instead of a table")


def cmd_eval(args: argparse.Namespace) -> int:
    from appliance.evaluation import run

    return run(_settings(args), args.set, workspace=args.workspace, model=args.model, prompt=args.prompt,
               docs=args.docs, min_recall=args.min_recall, min_answers=args.min_answers)


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", required=True, type=Path, help="labelled questions (.jsonl, or .toml with [[case]])")
    p.add_argument("--workspace", "-w", default="eval", help="workspace to retrieve from (default eval)")
    p.add_argument("--docs", type=Path, help="a directory to ingest into the workspace first")
    p.add_argument("--model", help="model to ask (default: the catalog's first)")
    p.add_argument("--prompt", help="RAG prompt to use, name@version (default: the workspace's)")
    p.add_argument("--min-recall", type=float, default=0.9, help="retrieval recall needed to pass (default 0.9)")
    p.add_argument("--min-answers", type=float, default=0.9,
                   help="share of answers that must contain their phrases (default 0.9)")


Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")


def _add_inference(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="gRPC address (default 0.0.0.0:50051)")
    p.add_argument("--health-listen", help="HTTP /healthz and /metrics address (default 0.0.0.0:50052)")


def _no_args(p: argparse.ArgumentParser) -> None:
    return None


def _add_keys(p: argparse.ArgumentParser) -> None:
    from appliance.access.arguments import add_arguments

    add_arguments(p)


def cmd_keys(args: argparse.Namespace) -> int:
    from appliance.access.cli import run

    return run(_settings(args), args)


COMMANDS: list[Command] = [
    ("serve", "run the gateway (Falcon ASGI under Granian)", _add_serve, cmd_serve),
    ("inference", "run the gRPC embedding/rerank service (onnxruntime)", _add_inference, cmd_inference),
    ("check-config", "validate settings and the catalog, then exit", _no_args, cmd_check_config),
    ("migrate", "apply the missing sql/ migrations (APPLIANCE_DATABASE_URL or the embedded server)", _no_args, cmd_migrate),
    ("ingest", "chunk, embed and store files into a workspace", _add_ingest, cmd_ingest),
    ("persist", "consume PIPELINE events from NATS into PostgreSQL", _no_args, cmd_persist),
    ("relay", "publish the gateway's event spool to NATS (`serve` runs it for you)", _no_args, cmd_relay),
    ("keys", "create, list, revoke or rotate API keys (PostgreSQL)", _add_keys, cmd_keys),
    ("usage", "requests, tokens, cost and latency per key, model, backend or day (PostgreSQL)", _add_usage, cmd_usage),
    ("eval", "run a labelled question set through the RAG pipeline; exit 1 below the thresholds", _add_eval,
     cmd_eval),
    ("up", "everything on this machine: embedded PostgreSQL, local LLM (if installed), gateway", _add_serve, cmd_up),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="homelab AI gateway appliance")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_args, func in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", type=Path, help="catalog TOML (default $APPLIANCE_CONFIG)")
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
