"""The legacy OpenAI `POST /v1/completions`: its body checked and asked as chat, and a chat
answer written back in the `text_completion` shape.

A backend that speaks `/v1/completions` gets the client's body itself (the domain's
`LegacyText`); these translators serve every other backend:

- mapped onto chat: each prompt one user message; `max_tokens`, `temperature`, `top_p`, `n`,
  `stop`, `presence_penalty`, `frequency_penalty`, `logit_bias`, `seed`, `user`, `stream`,
  `stream_options` as they are; unknown fields passed on as the chat path does (a backend's
  own sampling fields); `echo` done here (the prompt in front of each choice's text).
- dropped, with a warning: `suffix`, `logprobs`, `best_of` (no chat equivalent).
- refused (400): prompts given as token ids, unless a text backend answers.
Back: choice `i` of prompt `p` is `index` `p * n + i`; `finish_reason` `tool_calls` reads
`stop`; usage summed over the prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from appliance.wire.bounds import check_count, check_depth
from appliance.wire.errors import WireError

log = logging.getLogger(__name__)

MAX_PROMPTS: Final = 2048
_AS_CHAT: Final = ("max_tokens", "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty",
                   "logit_bias", "seed", "user", "stream", "stream_options")
_TEXT_ONLY: Final = ("suffix", "logprobs", "best_of")
_LEGACY: Final = frozenset({"model", "prompt", "echo", *_AS_CHAT, *_TEXT_ONLY})
_FINISH: Final = {"tool_calls": "stop", "function_call": "stop"}


@dataclass(frozen=True, slots=True)
class CompletionsCall:
    """A checked `/v1/completions` body."""

    body: dict[str, Any]
    model: str
    stream: bool
    prompts: tuple[str, ...]                 # empty when the prompt is token ids
    token_prompts: int = 0                   # how many prompts are token-id arrays
    n: int = 1
    echo: bool = False
    wants_usage: bool = False                # streamed: the client asked for the usage chunk
    warnings: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.prompts) or self.token_prompts

    @property
    def chat_refusal(self) -> str | None:
        return "prompts given as token ids need a backend with /v1/completions" if self.token_prompts else None

    def chat_body(self, index: int) -> dict[str, Any]:
        """Prompt `index` as a chat body (token-id prompts: an empty user message, never sent:
        a chat backend refuses them first)."""
        out = {k: v for k, v in self.body.items() if k not in _LEGACY}
        out.update({k: self.body[k] for k in _AS_CHAT if k in self.body})
        text = self.prompts[index] if self.prompts else ""
        out["model"] = self.model
        out["messages"] = [{"role": "user", "content": text}]
        return out


def parse_completions(body: Any) -> CompletionsCall:
    """Check a decoded body; raises `WireError` naming the field."""
    if not isinstance(body, dict):
        raise WireError("The request body must be a JSON object")
    check_depth(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("'model' is required and must be a non-empty string", "model")
    prompts, tokens = _prompts(body.get("prompt"))
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise WireError("'stream' must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise WireError("'stream_options' must be an object", "stream_options")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
        raise WireError("'n' must be an integer from 1 to 128", "n")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise WireError("'max_tokens' must be a positive integer", "max_tokens")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list)
                                                           and all(isinstance(s, str) for s in stop))):
        raise WireError("'stop' must be a string or an array of strings", "stop")
    echo = body.get("echo") or False
    if not isinstance(echo, bool):
        raise WireError("'echo' must be a boolean", "echo")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise WireError(f"'{name}' must be a number", name)
    unknown = sorted(set(body) - _LEGACY)
    if unknown:
        log.debug("fields outside the completions schema passed on", extra={"fields": unknown})
    warnings = tuple(f"{k} is not available through chat; dropped unless a backend with /v1/completions answers"
                     for k in _TEXT_ONLY if body.get(k) not in (None, False, 0, 1, ""))
    return CompletionsCall(body, model, stream, prompts, tokens, n, echo,
                           bool(isinstance(options, dict) and options.get("include_usage")), warnings)


def _prompts(prompt: Any) -> tuple[tuple[str, ...], int]:
    """(text prompts, count of token-id prompts): a string, strings, token ids, or arrays of them."""
    if isinstance(prompt, str):
        return (prompt,), 0
    if not isinstance(prompt, list) or not prompt:
        raise WireError("'prompt' is required: a string, an array of strings, or token ids", "prompt")
    check_count(prompt, MAX_PROMPTS, "prompt")
    if all(isinstance(p, str) for p in prompt):
        return tuple(prompt), 0
    if all(_is_int(t) for t in prompt):
        return (), 1
    if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
        return (), len(prompt)
    raise WireError("'prompt' must be a string, an array of strings, an array of token ids, or an array of "
                    "those arrays", "prompt")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def usage_of(chat_usage: Any) -> dict[str, int] | None:
    if not isinstance(chat_usage, Mapping):
        return None
    prompt, completion = int(chat_usage.get("prompt_tokens") or 0), int(chat_usage.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def add_usage(total: dict[str, int] | None, more: dict[str, int] | None) -> dict[str, int] | None:
    if more is None:
        return total
    if total is None:
        return dict(more)
    return {k: total.get(k, 0) + more.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def text_choices(call: CompletionsCall, prompt: int, chat: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A chat completion's choices as prompt `prompt`'s text choices."""
    lead = call.prompts[prompt] if call.echo and call.prompts else ""
    out = []
    for i, choice in enumerate(chat.get("choices") or ()):
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message") or {}
        content = message.get("content")
        index = int(choice.get("index", i)) if isinstance(choice.get("index", i), int) else i
        finish = choice.get("finish_reason")
        out.append({"text": lead + (content if isinstance(content, str) else ""), "index": prompt * call.n + index,
                    "logprobs": None, "finish_reason": _FINISH.get(finish, finish) if isinstance(finish, str) else None})
    return out


def text_completion(call: CompletionsCall, answers: Sequence[Mapping[str, Any]], *, completion_id: str,
                    created: int) -> dict[str, Any]:
    """The chat answers (one per prompt, in order) as one `text_completion`."""
    choices: list[dict[str, Any]] = []
    usage: dict[str, int] | None = None
    for p, answer in enumerate(answers):
        choices += text_choices(call, p, answer)
        usage = add_usage(usage, usage_of(answer.get("usage")))
    out: dict[str, Any] = {"id": completion_id, "object": "text_completion", "created": created,
                           "model": call.model, "choices": choices}
    out["usage"] = usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    extra = next((a["appliance"] for a in answers if "appliance" in a), None)
    if extra is not None:
        out["appliance"] = extra
    return out


class TextStream:
    """Chat chunks (of one prompt at a time) as `text_completion` stream chunks."""

    def __init__(self, call: CompletionsCall, completion_id: str, created: int) -> None:
        self._call = call
        self._id = completion_id
        self._created = created
        self._echoed: set[int] = set()
        self.usage: dict[str, int] | None = None

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self._id, "object": "text_completion", "created": self._created, "model": self._call.model,
                "choices": choices}

    def feed(self, prompt: int, chunk: Mapping[str, Any]) -> dict[str, Any] | None:
        """One chat chunk of prompt `prompt`; None when it carries nothing for a text client
        (its usage is kept for `close`)."""
        self.usage = add_usage(self.usage, usage_of(chunk.get("usage")))
        choices = []
        for i, choice in enumerate(chunk.get("choices") or ()):
            if not isinstance(choice, Mapping):
                continue
            index = prompt * self._call.n + (choice["index"] if isinstance(choice.get("index"), int) else i)
            delta = choice.get("delta") or {}
            content = delta.get("content")
            text = content if isinstance(content, str) else ""
            if self._call.echo and self._call.prompts and index not in self._echoed:
                self._echoed.add(index)
                text = self._call.prompts[prompt] + text
            finish = choice.get("finish_reason")
            if not text and not finish:
                continue
            choices.append({"text": text, "index": index, "logprobs": None,
                            "finish_reason": _FINISH.get(finish, finish) if isinstance(finish, str) else None})
        return self._chunk(choices) if choices else None

    def close(self) -> dict[str, Any] | None:
        """The usage chunk, when the client asked for it."""
        if not self._call.wants_usage:
            return None
        return {**self._chunk([]), "usage": self.usage or {"prompt_tokens": 0, "completion_tokens": 0,
                                                             "total_tokens": 0}}


def passed(chunk: dict[str, Any], call: CompletionsCall) -> dict[str, Any] | None:
    """A text backend's own stream chunk, for the client: its model name, and the usage chunk
    (asked for by the gateway) only when the client asked for it."""
    if "usage" in chunk and not call.wants_usage:
        if not chunk.get("choices"):
            return None
        chunk = {k: v for k, v in chunk.items() if k != "usage"}
    chunk["model"] = call.model
    return chunk
