"""Ports: what the domain needs from the world, as `typing.Protocol`s. Adapters implement them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A complete (non-streaming) answer from a backend: the decoded JSON body."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend takes beyond the OpenAI chat schema, decided once per backend (by its
    kind, overridable in the catalog) and applied when a request is planned, whatever the
    dialect it came in."""

    extension_fields: frozenset[str] = frozenset()  # sampling fields outside OpenAI's schema (top_k, min_p)
    fetches_image_urls: bool = True                 # False: image URLs must be inlined as data URLs
    completions: bool = False                       # speaks POST /v1/completions
    tokenize: bool = False                          # has a /tokenize endpoint
    local: bool = False                             # a server on our own hardware: its time is GPU-seconds
    provider: str = "openai"                        # `gen_ai.provider.name` in traces: the backend's kind
    gpu_hour_usd: float = 0.0                       # a local server's hour: what an unpriced model's time costs
    thinking: str = "reasoning_effort_on"           # how it is told to think or not (domain/thinking.py)


class UpstreamStream(Protocol):
    """An open streaming response: iterate for each SSE event's `data:` payload as it arrives
    (without the `data: ` prefix; `[DONE]` excluded). `aclose()` cancels the upstream request."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        ...

    async def aclose(self) -> None:
        ...


class ChatBackend(Protocol):
    """An OpenAI-compatible LLM server (vLLM, llama.cpp, LM Studio, Ollama, a cloud API)."""

    name: str
    capabilities: Capabilities

    async def complete(self, payload: Mapping[str, Any]) -> UpstreamReply:
        """POST /chat/completions without streaming. Raises `UpstreamError` subclasses."""
        ...

    async def open_stream(self, payload: Mapping[str, Any]) -> UpstreamStream:
        """POST /chat/completions with `stream: true`; returns once the backend answered with
        a success status (so errors before the first byte raise `UpstreamError` here)."""
        ...

    async def complete_text(self, payload: Mapping[str, Any]) -> UpstreamReply:
        """POST /completions (the legacy text API) without streaming; only for a backend whose
        capabilities say `completions`. Raises `UpstreamError` subclasses."""
        ...

    async def open_text_stream(self, payload: Mapping[str, Any]) -> UpstreamStream:
        """POST /completions with `stream: true`, as `open_stream`."""
        ...

    async def list_models(self) -> list[dict[str, Any]]:
        """GET /models -> the `data` list. Raises `UpstreamError` subclasses."""
        ...

    async def count_tokens(self, payload: Mapping[str, Any]) -> int | None:
        """The prompt's tokens by the backend's own tokenizer (`/tokenize`), or None when it
        has none or cannot say."""
        ...

    async def loaded_models(self) -> frozenset[str] | None:
        """The models the server has in memory now, or None when it cannot say."""
        ...


class Embedder(Protocol):
    """Turns texts into L2-normalised dense vectors."""

    model_id: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        ...

    async def count_tokens(self, texts: Sequence[str]) -> int:
        ...


@dataclass(frozen=True, slots=True)
class RerankScore:
    index: int
    score: float


class Reranker(Protocol):
    """Scores candidate passages against a query; higher is more relevant."""

    model_id: str

    async def rerank(self, query: str, documents: Sequence[str]) -> list[RerankScore]:
        """One score per document, in input order."""
        ...


class Event(NamedTuple):
    """One event for the pipeline: subject, JSON-able payload, and its de-duplication id (a
    tuple: the relay makes several per request, and a dataclass costs more to build)."""

    subject: str
    payload: Mapping[str, Any]
    msg_id: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One Responses API response as stored: its own input items (each with an id) and the
    response object returned (output included). A continuation's context is the chain of
    these through `previous_response_id`. `owner`: the name of the API key that created it,
    "" for the anonymous caller of a gateway without keys; only that caller finds it."""

    id: str
    correlation_id: str
    model: str
    status: str
    previous_response_id: str | None
    input_items: Sequence[Mapping[str, Any]]
    response: Mapping[str, Any]
    owner: str


class ResponseStore(Protocol):
    """Where stored responses live (PostgreSQL `api_responses`). Raises `DependencyUnavailable`
    when it cannot be reached. Every read and delete is by id *and* owner: a response another
    caller owns is not there, exactly as an unknown id."""

    async def save(self, stored: StoredResponse) -> None:
        """Insert (or replace, its owner's own) one response; every reader sees it when this returns."""
        ...

    async def get(self, response_id: str, *, owner: str) -> StoredResponse | None:
        ...

    async def delete(self, response_id: str, *, owner: str) -> bool:
        """Whether a response with that id and owner was there."""
        ...

    async def chain(self, response_id: str, limit: int, *, owner: str) -> list[StoredResponse]:
        """The response and those before it through `previous_response_id`, oldest first, at
        most `limit` of them, all `owner`'s (the chain stops before another's); empty when
        `owner` has no such response."""
        ...
