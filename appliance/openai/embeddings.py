"""Wire shapes of `POST /v1/embeddings` (OpenAI) and `POST /v1/rerank` (Cohere/Jina shape, as
LiteLLM serves it). Pure functions: decoded JSON in, values out; `WireError` on a bad body."""

from __future__ import annotations

import base64
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from appliance.wire.bounds import check_depth
from appliance.wire.errors import WireError

log = logging.getLogger(__name__)

EMBED_KNOWN: Final = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
RERANK_KNOWN: Final = frozenset({"model", "query", "documents", "top_n", "return_documents",
                                 "max_chunks_per_doc", "rank_fields"})


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str | None
    inputs: list[str]
    encoding_format: str        # "float" | "base64"
    dimensions: int | None


@dataclass(frozen=True, slots=True)
class RerankRequest:
    model: str | None
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool


def _unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    extra = set(body) - known
    if extra:
        log.debug("ignoring unknown fields", extra={"fields": sorted(extra)})


def parse_embeddings(body: Any, max_inputs: int) -> EmbeddingsRequest:
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    _unknown(body, EMBED_KNOWN)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise WireError("'model' must be a string", "model")
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(isinstance(x, int | list) for x in raw):
        raise WireError("Token-id arrays are not supported (they belong to another tokenizer); send strings "
                        "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))", "input")
    else:
        raise WireError("'input' is required: a string or an array of strings", "input")
    if not inputs:
        raise WireError("'input' must not be empty", "input")
    if len(inputs) > max_inputs:
        raise WireError(f"'input' has {len(inputs)} items; at most {max_inputs} are allowed", "input")
    for i, text in enumerate(inputs):
        if not text:
            raise WireError(f"input[{i}] is an empty string", "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise WireError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise WireError("'dimensions' must be a positive integer", "dimensions")
    return EmbeddingsRequest(model, inputs, fmt, dims)


def encode_base64(vector: Sequence[float]) -> str:
    """Little-endian float32, base64: what the OpenAI API returns for `encoding_format=base64`."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_response(vectors: Sequence[Sequence[float]], model: str, tokens: int,
                        encoding_format: str) -> dict[str, Any]:
    encode = encode_base64 if encoding_format == "base64" else list
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def parse_rerank(body: Any, max_documents: int) -> RerankRequest:
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    _unknown(body, RERANK_KNOWN)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise WireError("'model' must be a string", "model")
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise WireError("'query' is required and must be a non-empty string", "query")
    raw = body.get("documents")
    if not isinstance(raw, list) or not raw:
        raise WireError("'documents' is required and must be a non-empty array", "documents")
    if len(raw) > max_documents:
        raise WireError(f"'documents' has {len(raw)} items; at most {max_documents} are allowed", "documents")
    documents: list[str] = []
    for i, doc in enumerate(raw):
        if isinstance(doc, dict) and isinstance(doc.get("text"), str):
            doc = doc["text"]
        if not isinstance(doc, str):
            raise WireError(f"documents[{i}] must be a string or an object with 'text'", f"documents[{i}]")
        documents.append(doc)
    top_n = body.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise WireError("'top_n' must be a positive integer", "top_n")
    return_documents = body.get("return_documents", False)
    if not isinstance(return_documents, bool):
        raise WireError("'return_documents' must be a boolean", "return_documents")
    return RerankRequest(model, query, documents, top_n, return_documents)


def rerank_response(request_id: str, model: str, ranked: Sequence[tuple[int, float]],
                    documents: Sequence[str] | None) -> dict[str, Any]:
    """`ranked` is (index, score) best first; `documents` when they are to be echoed."""
    results: list[dict[str, Any]] = []
    for index, score in ranked:
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if documents is not None:
            item["document"] = {"text": documents[index]}
        results.append(item)
    return {"id": request_id, "model": model, "results": results,
            "meta": {"billed_units": {"search_units": 1}}}
