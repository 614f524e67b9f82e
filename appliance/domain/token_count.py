"""How many input tokens a chat request is, before sending it (Anthropic's `count_tokens`).

The model's own backend counts when it can (`/tokenize`: vLLM applies the model's chat
template, llama.cpp counts the messages' text): `estimated` is False. Otherwise, or when that
backend is cooling down or cannot say, the gateway estimates: the messages' text by the
gateway's own tokenizer (the embedding model's; loaded without its model) plus a few tokens per
message for the chat template, or, when that tokenizer is unavailable, the body's bytes at
`bytes_per_token` (an overestimate). Tool definitions are estimated either way (no `/tokenize`
here takes them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from appliance.domain.errors import UpstreamError
from appliance.domain.messages import content_text
from appliance.domain.ports import ChatBackend
from appliance.domain.routing import Target
from appliance.domain.upstreams import Upstreams

log = logging.getLogger(__name__)

PER_MESSAGE: Final = 4  # a chat template's role markers and separators, per message


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    estimated: bool
    counted_by: str   # "backend <name>", "gateway tokenizer" or "bytes estimate"


class TokenCounter:
    def __init__(self, target: Callable[[str], Awaitable[Target]], backends: Mapping[str, ChatBackend],
                 upstreams: Upstreams, *, count_text: Callable[[Sequence[str]], Awaitable[int]] | None,
                 bytes_per_token: float) -> None:
        self._target = target
        self._backends = backends
        self._upstreams = upstreams
        self._count_text = count_text
        self._bytes_per_token = bytes_per_token

    async def count(self, model: str, body: Mapping[str, Any]) -> TokenCount:
        """`body` is an OpenAI chat body (messages, tools)."""
        target = await self._target(model)
        messages = list(body.get("messages") or [])
        tools = body.get("tools") or []
        extra = await self._estimate([json.dumps(tools)]) if tools else 0
        for name in target.backends:
            backend = self._backends.get(name)
            if backend is None or not backend.capabilities.tokenize or self._upstreams.breakers[name].refusing:
                continue
            try:
                counted = await backend.count_tokens({"model": target.upstream_model, "messages": messages})
            except (TimeoutError, UpstreamError) as exc:
                log.info("the backend could not count tokens; estimating", extra={"backend": name,
                                                                                  "error": type(exc).__name__})
                break
            if counted is not None:
                return TokenCount(counted + extra, False, f"backend {name}")
        texts = [content_text(m.get("content")) for m in messages if isinstance(m, Mapping)]
        if self._count_text is not None:
            try:
                tokens = await self._count_text(texts) + PER_MESSAGE * len(messages) + extra
                return TokenCount(tokens, True, "gateway tokenizer")
            except Exception as exc:  # the tokenizer is a convenience: the byte estimate always answers
                log.warning("the gateway tokenizer failed; estimating from bytes", extra={"error": repr(exc)})
        size = len(json.dumps(messages, ensure_ascii=False).encode())
        return TokenCount(int(size / self._bytes_per_token) + extra, True, "bytes estimate")

    async def _estimate(self, texts: Sequence[str]) -> int:
        if self._count_text is not None:
            try:
                return await self._count_text(texts)
            except Exception:
                pass
        return int(sum(len(t.encode()) for t in texts) / self._bytes_per_token)
