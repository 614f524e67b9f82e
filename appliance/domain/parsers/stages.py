"""The chain's four stages, which of them apply to a request, and how they are counted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

TOOL_CALLS: Final = "tool_calls"
REASONING: Final = "reasoning"
VISION: Final = "vision"
OUTPUT_FORMAT: Final = "output_format"
ALL: Final = (TOOL_CALLS, REASONING, VISION, OUTPUT_FORMAT)
# Backend kinds whose servers often run without a tool or reasoning parser: on by default.
LOCAL_KINDS: Final = frozenset({"vllm", "llamacpp", "lmstudio", "ollama"})

# What the counters are told: (stage, outcome). Both come from these fixed sets, so the
# metric's labels stay bounded whatever a model writes.
OUTCOMES: Final = {
    TOOL_CALLS: ("recovered", "unparsable", "invalid_arguments", "unknown_tool", "too_long"),
    REASONING: ("split", "passed_through"),
    VISION: ("inlined", "refused", "too_large", "timeout", "failed"),
    OUTPUT_FORMAT: ("valid", "retried", "invalid_returned", "invalid_streamed"),
}

Count = Callable[[str, str], None]


def no_count(stage: str, outcome: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ParserSettings:
    """Bounds of the chain, from config."""

    max_buffer_chars: int = 262_144      # text held back while a tool call is being written
    schema_retries: int = 1              # re-asks when a strict json_schema answer does not validate


DEFAULTS: Final = ParserSettings()


def default_stages(kind: str) -> frozenset[str]:
    return frozenset(ALL) if kind in LOCAL_KINDS else frozenset()


def offered_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's function tools: name -> its parameters schema (None when it gives none).
    Empty when it offers none, or asks for no tool call (`tool_choice: "none"`)."""
    tools = body.get("tools")
    if not tools or not isinstance(tools, list) or body.get("tool_choice") == "none":
        return {}
    out: dict[str, Any] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            params = function.get("parameters")
            out[function["name"]] = params if isinstance(params, Mapping) else None
    return out
