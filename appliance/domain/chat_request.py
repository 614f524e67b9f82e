"""What a chat is while the gateway answers it: the validated request (`ChatRequest`), how it
will be and was answered (`ChatPlan`), a whole answer (`ChatReply`), and the JSON the
transport shows of its sources and prompt."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.domain.legacy_text import LegacyText
from appliance.domain.prompts import Prompt
from appliance.domain.rag import Passage
from appliance.domain.routing import Target


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request; `body` is the client's JSON, passed through upstream."""

    body: dict[str, Any]
    model: str
    stream: bool
    correlation_id: str
    workspace: str | None = None
    rag_top_k: int | None = None
    prompt: str | None = None        # x-prompt-version: the RAG prompt asked for
    received_at: float = field(default_factory=time.perf_counter)
    # Fields outside the OpenAI schema a dialect parsed (Anthropic's top_k, Ollama's options):
    # sent only to a backend whose capabilities take them.
    extensions: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None           # the caller's API key name (for the outcome), never the key
    text: LegacyText | None = None   # a legacy /v1/completions body: what a text backend gets (legacy_text.py)


@dataclass(slots=True)
class ChatPlan:
    """How a request will be answered. Until the call, `target` is the model asked for and
    `backend` its first backend; after it, the model and backend that answered."""

    target: Target
    payload: dict[str, Any]          # the request as every backend gets it (model and extensions fitted per try)
    route: str = "direct"
    sources: tuple[str, ...] = ()
    passages: tuple[Passage, ...] = ()  # the numbered sources, as the prompt has them
    prompt: Prompt | None = None        # the prompt the gateway wrote (RAG), None when it wrote none
    warnings: list[str] = field(default_factory=list)
    wants_usage: bool = False
    chain: tuple[Target, ...] = ()   # target, then its fallbacks
    backend: str = ""
    fallback_from: str | None = None  # the model asked for, when a fallback answered
    routing: dict[str, Any] = field(default_factory=dict)  # a router's decision: router, selected, reason
    upstream_began: float | None = None  # clock time the answering backend's call began
    schema_warning: str | None = None    # a strict json_schema answer still invalid after its retries
    text_answer: bool = False            # a text backend answered a legacy completions request (text_completion shape)


@dataclass(slots=True)
class ChatReply:
    body: dict[str, Any]
    upstream_ms: float


def passages_json(passages: tuple[Passage, ...]) -> list[dict[str, Any]]:
    """The numbered sources as clients see them (`[n]` in the answer is `number`)."""
    return [{"number": p.number, "document_id": p.document_id, "chunk_index": p.chunk_index,
             "content": p.content, "scores": dict(p.scores)} for p in passages]


def prompt_json(prompt: Prompt | None) -> dict[str, Any] | None:
    return None if prompt is None else {"name": prompt.name, "version": prompt.version}
