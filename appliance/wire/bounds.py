"""Bounds every request body gets before a dialect reads it: how deep its JSON nests, how many
messages it carries, and strings free of NUL where they are to be stored.

Why these numbers: the body (or the upstream body made from it, a few levels deeper) is
written again with orjson, which refuses more than 254 levels of nesting; PostgreSQL text
refuses NUL. `MAX_DEPTH` keeps every written body far below orjson's limit while allowing any
real request (a tool's JSON schema rarely nests past 10). `MAX_MESSAGES` is longer than any
conversation a context window holds, and bounds the per-message work of translating a
body that the byte limit alone would let carry a million empty messages.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, Final

from appliance.wire.errors import WireError

MAX_DEPTH: Final = 64
MAX_MESSAGES: Final = 10_000


def check_depth(value: Any, limit: int = MAX_DEPTH, param: str | None = None) -> None:
    """Refuse JSON nested more than `limit` arrays or objects deep (the outermost counts as
    one). `param` names the value in the error; else the top-level field that is too deep."""
    if not _deeper_than(value, limit):
        return
    if param is None and isinstance(value, dict):
        param = next((str(key) for key, child in value.items() if _deeper_than(child, limit - 1)), None)
    raise WireError(f"{param or 'the request body'} is nested more than {limit} levels deep", param)


def _deeper_than(value: Any, limit: int) -> bool:
    # A level at a time, containers only: cheap enough to run on every request.
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            below += [c for c in (node.values() if isinstance(node, dict) else node) if isinstance(c, dict | list)]
        level = below
    return False


def check_count(items: Sized, limit: int, param: str) -> None:
    """Refuse more than `limit` items in `param`."""
    if len(items) > limit:
        raise WireError(f"{param} has {len(items)} items; at most {limit} are allowed", param)


def has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string of this decoded JSON, keys included."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def check_text(value: str, param: str) -> str:
    """`value`, refused if it holds a NUL character (PostgreSQL text cannot)."""
    if "\x00" in value:
        raise WireError(f"{param} must not contain NUL characters", param)
    return value
