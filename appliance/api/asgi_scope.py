"""Puts the ASGI `receive` callable in the scope, so a streaming responder can watch for
the client hanging up (Falcon keeps it private)."""

from __future__ import annotations

from typing import Any, Final

RECEIVE_KEY: Final = "appliance.receive"


class ReceiveInScope:
    """Wraps an ASGI app; HTTP scopes get `scope["appliance.receive"] = receive`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[RECEIVE_KEY] = receive
        await self.app(scope, receive, send)
