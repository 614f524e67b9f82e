"""Recent chats as the web UI's Activity page shows them: the port its store implements.

Rows come from the event pipeline's tables (`chat_pairs` joined with `chat_history`, written
by `appliance persist`), so a chat shows up once the relay and the persister have carried
it (a second or so), and only where they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class ActivityLog(Protocol):
    """Raises `DependencyUnavailable` when PostgreSQL (or its event tables) cannot answer."""

    async def recent(self, limit: int, workspaces: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The newest chats first: time, model, backend, route, tokens, latency, TTFT, cost;
        with `workspaces`, only the chats of those."""
        ...

    async def detail(self, event_id: str) -> dict[str, Any] | None:
        """One chat: its prompt, answer and sources (chunk text and score); None if unknown."""
        ...
