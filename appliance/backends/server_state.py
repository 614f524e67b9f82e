"""What a local LLM server can tell about itself beyond the OpenAI API: how many tokens a
prompt is (`/tokenize`) and which models it has in memory, by server kind.

| kind     | tokens                                   | loaded models                                  |
|----------|------------------------------------------|------------------------------------------------|
| vllm     | POST /tokenize {model, messages} -> count | every model it serves (GET /v1/models)         |
| llamacpp | POST /tokenize {content} -> tokens        | llama-swap's GET /running, else GET /v1/models |
| lmstudio | -                                        | GET /api/v0/models, `state: "loaded"`          |
| ollama   | -                                        | GET /api/ps                                    |
| openai   | -                                        | - (a cloud API has everything "loaded")        |

Pure functions from an answer's JSON to the figure; the HTTP calls are the backend's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from appliance.domain.messages import content_text


def tokenize_request(kind: str, model: str, messages: Sequence[Any]) -> tuple[str, dict[str, Any]] | None:
    """The path under the server's root and the body that counts a prompt's tokens."""
    if kind == "vllm":
        return "/tokenize", {"model": model, "messages": list(messages)}
    if kind == "llamacpp":
        text = "\n".join(content_text(m.get("content")) for m in messages if isinstance(m, Mapping))
        return "/tokenize", {"content": text, "add_special": True}
    return None


def token_count(kind: str, answer: Any) -> int | None:
    if not isinstance(answer, Mapping):
        return None
    if kind == "vllm" and isinstance(answer.get("count"), int):
        return int(answer["count"])
    tokens = answer.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def loaded_paths(kind: str) -> tuple[str, ...]:
    """Where to ask, under the server's root, in order (the first that answers counts)."""
    return {"vllm": ("/v1/models",), "llamacpp": ("/running", "/v1/models"), "lmstudio": ("/api/v0/models",),
            "ollama": ("/api/ps",)}.get(kind, ())


def loaded_from(path: str, answer: Any) -> frozenset[str] | None:
    if not isinstance(answer, Mapping):
        return None
    if path == "/api/ps":
        models = answer.get("models")
        return frozenset(str(m.get("model") or m.get("name")) for m in models if isinstance(m, Mapping)) \
            if isinstance(models, list) else None
    if path == "/running":
        running = answer.get("running")
        return frozenset(str(m.get("model")) for m in running if isinstance(m, Mapping)
                         and m.get("state", "ready") == "ready") if isinstance(running, list) else None
    data = answer.get("data")
    if not isinstance(data, list):
        return None
    if path == "/api/v0/models":
        return frozenset(str(m.get("id")) for m in data if isinstance(m, Mapping) and m.get("state") == "loaded")
    return frozenset(str(m.get("id")) for m in data if isinstance(m, Mapping) and m.get("id"))
