"""A caller's wish that the model think first, or not, as the dialects say it.

Anthropic's `thinking` (`{"type": "enabled", "budget_tokens": N}` or `{"type": "disabled"}`)
and Ollama's `think` (`true`, `false`, or an effort: `"low"`, `"medium"`, `"high"`) become the
same extension, `thinking`: `{"on": bool, "effort": "low" | "medium" | "high" | None}`, which
planning then tells each backend in the field that backend reads (`appliance.domain.thinking`).
Absent, nothing is sent and the model does what it does by default.
"""

from __future__ import annotations

from typing import Any, Final

from appliance.wire.errors import WireError

THINKING: Final = "thinking"
EFFORTS: Final = ("low", "medium", "high")
# Anthropic's budget in tokens -> an effort, for backends that take an effort instead.
_LOW_UP_TO: Final = 2048
_MEDIUM_UP_TO: Final = 8192


def anthropic_thinking(value: Any) -> dict[str, Any] | None:
    """The wish in a Messages body's `thinking`, or None when it has none."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("enabled", "disabled"):
        raise WireError("thinking: must be {\"type\": \"enabled\", \"budget_tokens\": N} or {\"type\": \"disabled\"}",
                        "thinking")
    if value["type"] == "disabled":
        return {"on": False, "effort": None}
    budget = value.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise WireError("thinking.budget_tokens: a positive integer is required", "thinking.budget_tokens")
    effort = "low" if budget <= _LOW_UP_TO else "medium" if budget <= _MEDIUM_UP_TO else "high"
    return {"on": True, "effort": effort}


def ollama_think(value: Any) -> dict[str, Any] | None:
    """The wish in an `/api/chat` or `/api/generate` body's `think`, or None when it has none."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"on": value, "effort": None}
    if value in EFFORTS:
        return {"on": True, "effort": value}
    raise WireError("think: must be true, false, or one of 'low', 'medium', 'high'", "think")
