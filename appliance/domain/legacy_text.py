"""A legacy `/v1/completions` request on the chat path: what a backend that speaks the text API
gets instead of the chat body.

The transport asks every completions request as chat (`ChatRequest.body`: each prompt one user
message), so routing, routers, fallbacks, context fit, moderation and the record read it like
any chat. `ChatRequest.text` keeps the client's own body: a backend whose capabilities say
`completions` (vLLM, llama.cpp, LM Studio, Ollama) gets it unchanged but for the model name, and
its `text_completion` answer is passed back; any other backend gets the chat body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.domain.errors import InvalidRequest
from appliance.domain.ports import ChatBackend


@dataclass(frozen=True, slots=True)
class LegacyText:
    """The client's `/v1/completions` body, and what the chat translation could not carry."""

    body: Mapping[str, Any]
    prompts: tuple[str, ...]            # the text prompts (empty for token-id prompts)
    chat_refusal: str | None = None     # why it cannot be asked as chat (token ids): a 400 unless passed through

    def payload(self, chat_payload: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
        """The body a text backend gets on this try: the client's, with the try's model name
        (and, streamed, usage asked for, so the record has token counts)."""
        out = {**self.body, "model": chat_payload.get("model", self.body.get("model"))}
        if stream:
            options = self.body.get("stream_options")
            out["stream_options"] = {**(options if isinstance(options, Mapping) else {}), "include_usage": True}
        return out

    def refuse_chat(self, backend: ChatBackend) -> None:
        if self.chat_refusal is not None:
            raise InvalidRequest(f"{self.chat_refusal}; backend {backend.name} speaks only chat, so they cannot be "
                                 "passed through", param="prompt")


def takes_text(text: LegacyText | None, backend: ChatBackend) -> bool:
    """Whether this try sends the legacy body (the backend speaks /v1/completions)."""
    return text is not None and backend.capabilities.completions
