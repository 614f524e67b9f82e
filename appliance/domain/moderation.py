"""Moderation through a guard model on one of the backends (`[moderations] model` in the catalog):
`/v1/moderations`, and input screening for the models and routers with `moderate = "input"`.

Each input is asked in the guard's own prompt format (guard_prompts.py): through the backend's
`/v1/completions` with the whole prompt when it speaks it (vLLM, llama.cpp, LM Studio, Ollama),
else through chat, where a Llama Guard model's own chat template writes the task around the
conversation and ShieldGemma gets its question as the user message. The guard is a catalog
model, so its backend is chosen like any (replicas, breakers, fallbacks); its calls are not
chat outcomes but are counted (`count(use, result)`) and logged.

Screening fails closed: a guard that cannot answer, or answers no verdict, refuses the request
with `DependencyUnavailable` (503), since letting unscreened input through is what the operator
asked not to happen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from appliance.domain.attempts import Walk
from appliance.domain.errors import (
    BackendUnavailable,
    ContentFiltered,
    DependencyUnavailable,
    ModelNotFound,
    UpstreamError,
)
from appliance.domain.guard_prompts import (
    SHIELDGEMMA,
    GuardFormat,
    UnreadableVerdict,
    Verdict,
    llama_guard_prompt,
    read_llama_guard,
    read_shieldgemma,
    shieldgemma_prompt,
    turns,
)
from appliance.domain.ports import ChatBackend
from appliance.domain.routing import ModelRouter
from appliance.domain.upstreams import Upstreams

log = logging.getLogger(__name__)

_ANSWER_TOKENS = 20  # "unsafe\nS1,S2,...": a verdict is a few tokens; more is a guard that rambles
GUARD_CALLS_AT_ONCE = 8  # one request's guard calls in flight, at most (32 inputs x 4 ShieldGemma policies)


class Moderation:
    """The guard model and the names (models, routers) whose input it screens."""

    def __init__(self, model: str, fmt: GuardFormat, router: ModelRouter, walk: Walk, upstreams: Upstreams, *,
                 screened: Collection[str] = (), count: Callable[[str, str], None] | None = None) -> None:
        self.model = model
        self.format = fmt
        self._router = router
        self._walk = walk
        self._upstreams = upstreams
        self._screened = frozenset(screened)
        self._count = count or (lambda use, result: None)

    def applies(self, names: Collection[str]) -> bool:
        return not self._screened.isdisjoint(names)

    async def classify(self, conversations: Sequence[Sequence[Mapping[str, Any]]], *, use: str) -> list[Verdict]:
        """One verdict per conversation (OpenAI chat messages; the user's and the assistant's
        text is read). Raises `UpstreamError` when the guard cannot answer or answers no verdict."""
        try:
            room = asyncio.Semaphore(GUARD_CALLS_AT_ONCE)
            verdicts = list(await asyncio.gather(*(self._one(turns(c), room) for c in conversations)))
        except UpstreamError:
            self._count(use, "error")
            raise
        for verdict in verdicts:
            self._count(use, "flagged" if verdict.flagged else "safe")
        return verdicts

    async def screen(self, conversations: Sequence[Sequence[Mapping[str, Any]]], correlation_id: str) -> None:
        """Refuse flagged input (`ContentFiltered`), and any input the guard could not judge."""
        try:
            verdicts = await self.classify(conversations, use="input")
        except UpstreamError as exc:
            log.warning("input moderation failed; the request is refused", extra={
                "guard": self.model, "error": type(exc).__name__})
            raise DependencyUnavailable(
                f"input moderation is required for this model and the guard model '{self.model}' could not judge "
                f"the input ({type(exc).__name__}); the request was not sent to any model", code="moderation_unavailable",
            ) from exc
        flagged = [v for v in verdicts if v.flagged]
        if flagged:
            names = sorted({n for v in flagged for n in v.categories})
            codes = sorted({c for v in flagged for c in v.codes})
            log.info("input flagged by moderation; refused", extra={"guard": self.model, "categories": names,
                                                                   "codes": codes})
            raise ContentFiltered(names, codes)

    async def _one(self, conversation: list[tuple[str, str]], room: asyncio.Semaphore) -> Verdict:
        if not any(role == "user" for role, _ in conversation):
            return Verdict(False, frozenset())  # no user text to judge (an image only, say)
        try:
            if self.format == "llama-guard-3":
                messages = [{"role": role, "content": text} for role, text in conversation]
                return read_llama_guard(await self._ask(llama_guard_prompt(conversation), messages, room))
            text = "\n\n".join(t for role, t in conversation if role == "user")
            prompts = {p: shieldgemma_prompt(text, p) for p in SHIELDGEMMA}
            answers = await asyncio.gather(*(self._ask(q, [{"role": "user", "content": q}], room)
                                             for q in prompts.values()))
            return read_shieldgemma(dict(zip(prompts, answers, strict=True)))
        except UnreadableVerdict as exc:
            raise BackendUnavailable(f"the guard model '{self.model}' answered no {self.format} verdict: {exc}",
                                     backend=self._backend_name()) from exc

    def _backend_name(self) -> str:
        target = self._router.find(self.model)
        return target.backend if target is not None else ""

    async def _ask(self, prompt: str, messages: list[dict[str, Any]], room: asyncio.Semaphore) -> str:
        """The guard's answer: the whole prompt to a text backend, else the chat messages."""
        target = self._router.find(self.model)
        if target is None:
            raise ModelNotFound(self.model)
        base = {"model": target.upstream_model, "messages": messages, "max_tokens": _ANSWER_TOKENS, "temperature": 0}

        async def call(backend: ChatBackend, payload: dict[str, Any]) -> str:
            if backend.capabilities.completions:
                body = (await backend.complete_text({"model": payload["model"], "prompt": prompt,
                                                     "max_tokens": _ANSWER_TOKENS, "temperature": 0})).body
                return _first(body, backend, "text")
            return _first((await backend.complete(payload)).body, backend, "message")

        async with room:
            answer, answered = await self._walk.run((target,), base, {}, call)
        self._upstreams.done(answered.backend)
        return answer


def _first(body: Mapping[str, Any], backend: ChatBackend, part: str) -> str:
    """The first choice's text (`text` of a text completion, `message.content` of a chat one)."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], Mapping) else {}
    value = choice.get("text") if part == "text" else (choice.get("message") or {}).get("content")
    if not isinstance(value, str):
        raise BackendUnavailable(f"backend {backend.name} sent a guard answer without text", backend=backend.name)
    return value
