"""Retrieval-augmented chat: the context port and how its result is put into a prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.domain.prompts import Prompt


@dataclass(frozen=True, slots=True)
class Passage:
    """One numbered source of a RAG prompt: `[number]` in the prompt and in the answer."""

    number: int
    document_id: str
    chunk_index: int
    content: str
    scores: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class RetrievedContext:
    """A system message with numbered sources, the document ids it cites (in order), the
    passages themselves and the prompt it was written with (None: the sources alone)."""

    system_message: str
    sources: tuple[str, ...]
    passages: tuple[Passage, ...] = ()
    prompt: Prompt | None = None


class ContextProvider(Protocol):
    """Finds the passages of a workspace that answer `query`. Raises `DependencyUnavailable`
    when the store is down."""

    async def context_for(self, workspace: str, query: str, top_k: int, correlation_id: str, *,
                          prompt: str | None = None) -> RetrievedContext:
        """`prompt`: a reference the client asked for (`x-prompt-version`); `InvalidRequest`
        when it names no prompt."""
        ...


def inject(messages: Sequence[Mapping[str, Any]], context: RetrievedContext) -> list[Mapping[str, Any]]:
    """The messages with the context's system message placed after any leading system messages."""
    out = list(messages)
    at = 0
    while at < len(out) and out[at].get("role") in ("system", "developer"):
        at += 1
    out.insert(at, {"role": "system", "content": context.system_message})
    return out
