"""OpenAI `POST /v1/moderations`: the request's inputs, and each verdict in OpenAI's result shape.

`input` is a string, an array of strings (one result each), or an array of multimodal parts
(one result: the text parts read together; image parts are not judged, and say so in
`category_applied_input_types`, which lists `text` only). `model` is accepted and ignored: the
gateway's guard model (`[moderations] model`) answers and its id is the response's `model`.
A guard gives a verdict, not a probability, so `category_scores` are 1.0 for a flagged
category and 0.0 otherwise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from appliance.wire.bounds import check_depth
from appliance.wire.errors import WireError

CATEGORIES: Final = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                     "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                     "sexual/minors", "violence", "violence/graphic")


@dataclass(frozen=True, slots=True)
class ModerationCall:
    texts: tuple[str, ...]    # one per result
    images: int = 0           # image parts seen (not judged)


def parse_moderation(body: Any, *, max_inputs: int) -> ModerationCall:
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    value = body.get("input")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise WireError("'model' must be a string", "model")
    if isinstance(value, str):
        return ModerationCall((value,))
    if not isinstance(value, list) or not value:
        raise WireError("'input' is required: a string, an array of strings, or an array of text and image parts",
                        "input")
    if len(value) > max_inputs:
        raise WireError(f"'input' has {len(value)} items; at most {max_inputs} per request "
                        "([moderations] max_inputs)", "input")
    if all(isinstance(v, str) for v in value):
        return ModerationCall(tuple(value))
    texts, images = [], 0
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            images += 1
        else:
            raise WireError(f"input[{i}] must be a string, a text part or an image_url part", f"input[{i}]")
    return ModerationCall(("\n".join(texts),), images)


def moderation_result(flagged: bool, categories: Collection[str], guard: Mapping[str, Any]) -> dict[str, Any]:
    """One result: every OpenAI category (flagged ones true, score 1.0), and the guard's own
    verdict under `guard` (its format and codes; a code without an OpenAI name is only there)."""
    return {
        "flagged": flagged,
        "categories": {c: c in categories for c in CATEGORIES},
        "category_scores": {c: 1.0 if c in categories else 0.0 for c in CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
        "guard": dict(guard),
    }
