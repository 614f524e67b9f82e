"""Reading the text out of OpenAI chat messages (the shape every dialect is translated to)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def content_text(content: Any) -> str:
    """A message's text: the string, or its text parts joined by spaces; "" for anything else."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def last_user_text(messages: Sequence[Any]) -> str:
    """The text of the last user message; "" when there is none."""
    return next((content_text(m.get("content")) for m in reversed(messages)
                 if isinstance(m, Mapping) and m.get("role") == "user"), "")


def first_system_text(messages: Sequence[Any]) -> str | None:
    """The text of the first system message; None when there is none."""
    return next((content_text(m.get("content")) for m in messages
                 if isinstance(m, Mapping) and m.get("role") == "system"), None)
