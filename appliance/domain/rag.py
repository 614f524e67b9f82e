"""Retrieval-augmented chat: the context port and how its result is put into a prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class RetrievedContext:
    """A system message with numbered sources, and the document ids it cites (in order)."""

    system_message: str
    sources: tuple[str, ...]


class ContextProvider(Protocol):
    """Finds the passages of a workspace that answer `query`. Raises `DependencyUnavailable`
    when the store is down."""

    async def context_for(self, workspace: str, query: str, top_k: int, correlation_id: str) -> RetrievedContext:
        ...


def inject(messages: Sequence[Mapping[str, Any]], context: RetrievedContext) -> list[Mapping[str, Any]]:
    """The messages with the context's system message placed after any leading system messages."""
    out = list(messages)
    at = 0
    while at < len(out) and out[at].get("role") in ("system", "developer"):
        at += 1
    out.insert(at, {"role": "system", "content": context.system_message})
    return out
