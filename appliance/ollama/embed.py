"""`POST /api/embed` and the older `POST /api/embeddings`, onto the gateway's one embedding
model. Pure functions: decoded JSON in, values out; `WireError` on a bad body.

`model` is not checked (as on `/v1/embeddings`): the answer names the model that embedded.
`truncate`, `options` and `keep_alive` are dropped; inputs are cut at the model's maximum
length either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliance.wire.bounds import check_depth
from appliance.wire.errors import WireError


@dataclass(frozen=True, slots=True)
class EmbedCall:
    inputs: list[str]
    dimensions: int | None


def parse_embed(body: Any, max_inputs: int) -> EmbedCall:
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) and x for x in inputs):
        raise WireError("input is required: a non-empty string or an array of non-empty strings", "input")
    if len(inputs) > max_inputs:
        raise WireError(f"input has {len(inputs)} items; at most {max_inputs} are allowed", "input")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise WireError("dimensions must be a positive integer", "dimensions")
    return EmbedCall(list(inputs), dims)


def parse_embeddings(body: Any) -> str:
    """The prompt of a legacy `/api/embeddings` body."""
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise WireError("prompt is required and must be a non-empty string", "prompt")
    return prompt


def embed_response(vectors: Sequence[Sequence[float]], *, model: str, tokens: int, total_ns: int) -> dict[str, Any]:
    return {"model": model, "embeddings": [list(v) for v in vectors], "total_duration": total_ns,
            "prompt_eval_count": tokens}


def embeddings_response(vector: Sequence[float]) -> dict[str, Any]:
    return {"embedding": list(vector)}
