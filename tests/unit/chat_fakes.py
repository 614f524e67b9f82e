"""What ChatService is tested against without sockets: a scripted backend, a recorder that
keeps the outcomes, the JSON codec."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from appliance.domain.ports import Capabilities, UpstreamReply
from appliance.domain.records import ChatOutcome

REPLY = {"id": "x", "object": "chat.completion", "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


class FakeBackend:
    """Answers REPLY; raises the `fail` exceptions first, one per call; keeps what it was sent."""

    def __init__(self, name: str, *, capabilities: Capabilities | None = None, fail: list[BaseException] | None = None,
                 tokens: int | None = None, delay: float = 0.0) -> None:
        self.name = name
        self.capabilities = capabilities or Capabilities()
        self.fail = list(fail or [])
        self.calls: list[Mapping[str, Any]] = []
        self.tokens = tokens
        self.delay = delay

    async def complete(self, payload: Mapping[str, Any]) -> UpstreamReply:
        self.calls.append(payload)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise self.fail.pop(0)
        return UpstreamReply(orjson.loads(orjson.dumps(REPLY)))

    async def open_stream(self, payload: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    async def list_models(self) -> list[dict[str, Any]]:
        return []

    async def count_tokens(self, payload: Mapping[str, Any]) -> int | None:
        return self.tokens

    async def loaded_models(self) -> frozenset[str] | None:
        return None


class Outcomes:
    def __init__(self) -> None:
        self.chats: list[ChatOutcome] = []

    def chat(self, outcome: ChatOutcome) -> None:
        self.chats.append(outcome)

    def embedding(self, outcome: Any) -> None: ...

    def retrieval(self, outcome: Any) -> None: ...


class Codec:
    loads = staticmethod(orjson.loads)
    dumps = staticmethod(orjson.dumps)
