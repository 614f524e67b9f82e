"""`GET /api/tags`, `POST /api/show` and `GET /api/version` in Ollama's shapes, from the
gateway's model directory (OpenAI `model` objects).

The gateway serves models it does not store, so what Ollama reports about files is not
known: `size` is 0, `digest` is a stable id derived from the name (not a blob digest), and
`details` and `model_info` carry only what the catalog says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from appliance.ollama.replies import timestamp

# The Ollama release whose API these shapes follow; clients gate features on it.
API_VERSION: Final = "0.9.0"
# Catalog tags that name an Ollama capability.
_CAPABILITIES: Final = {"tools": "tools", "vision": "vision", "reasoning": "thinking", "thinking": "thinking",
                        "embedding": "embedding"}


def _details(model: Mapping[str, Any]) -> dict[str, Any]:
    return {"parent_model": "", "format": "", "family": str(model.get("owned_by") or ""), "families": None,
            "parameter_size": "", "quantization_level": ""}


def _modified_at(model: Mapping[str, Any]) -> str:
    return timestamp(float(model.get("created") or 0))


def tags_response(models: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The `/api/tags` body for a model listing."""
    return {"models": [{"name": m["id"], "model": m["id"], "modified_at": _modified_at(m), "size": 0,
                        "digest": hashlib.sha256(str(m["id"]).encode()).hexdigest(), "details": _details(m)}
                       for m in models]}


def show_response(model: Mapping[str, Any], tags: Iterable[str] = ()) -> dict[str, Any]:
    """The `/api/show` body: the catalog's description and context length, and the
    capabilities its tags name (always `completion`)."""
    capabilities = ["completion", *dict.fromkeys(_CAPABILITIES[t] for t in tags if t in _CAPABILITIES)]
    info: dict[str, Any] = {}
    if model.get("context_length"):
        info["general.architecture"] = "appliance"
        info["appliance.context_length"] = model["context_length"]
    out: dict[str, Any] = {"modelfile": "", "parameters": "", "template": "", "details": _details(model),
                           "model_info": info, "capabilities": capabilities, "modified_at": _modified_at(model)}
    if model.get("description"):
        out["description"] = model["description"]
    return out


def version_response() -> dict[str, Any]:
    return {"version": API_VERSION}
