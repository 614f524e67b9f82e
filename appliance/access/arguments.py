"""The arguments of `appliance keys` (argparse only: built for every command line)."""

from __future__ import annotations

import argparse
import datetime as dt


def parse_date(value: str) -> float:
    """`--expires`: an ISO date (midnight UTC that day) or an ISO time."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {value!r}") from exc
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make a key; prints it once, as the last line")
    create.add_argument("name")
    create.add_argument("--models", nargs="+", default=[], metavar="GLOB", help="models it may use (default any)")
    create.add_argument("--workspaces", nargs="+", default=[], metavar="NAME", help="workspaces (default any)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute (reserved from max_tokens, settled from usage)")
    create.add_argument("--budget-usd", type=float, help="spend per period (token prices, GPU-hours)")
    create.add_argument("--period", choices=("day", "month"), default="month", help="the budget's period (UTC)")
    create.add_argument("--expires", type=parse_date, metavar="DATE", help="ISO date or time (UTC)")
    create.add_argument("--admin", action="store_true", help="may use /admin/ (keys, usage)")
    create.add_argument("--from-stdin", action="store_true",
                        help="adopt a key read from stdin instead of making one (weak keys are refused)")
    sub.add_parser("list", help="every key, never a secret")
    for name, text in (("revoke", "refuse the key everywhere within seconds"),
                       ("rotate", "a new secret for the key, same limits; prints it once")):
        sub.add_parser(name, help=text).add_argument("name")
