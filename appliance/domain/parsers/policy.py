"""Which of the chain's stages apply to one request, and the chain built for it.

A model's stages come from its catalog entry (`parsers = [...]`, `[]` for none) or else from
its backend's kind (every stage for the local kinds, none for a cloud API). Within those, a
stage applies only when the request gives it something to do: tool calls when tools are
offered, output format for a strict json_schema, vision when an image URL goes to a backend
that cannot fetch it. When nothing applies, `stream` returns None and the relay runs as if
the chain did not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.domain.parsers.chain import StreamChain, parse_body
from appliance.domain.parsers.output_format import strict_schema
from appliance.domain.parsers.stages import (
    DEFAULTS,
    OUTPUT_FORMAT,
    REASONING,
    TOOL_CALLS,
    VISION,
    Count,
    ParserSettings,
    no_count,
    offered_tools,
)
from appliance.domain.parsers.vision import ImageFetcher, inline_images
from appliance.domain.routing import Target

log = logging.getLogger(__name__)
_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class VisionLimits:
    max_images: int = 8


class Parsers:
    """The chain's policy for every request of one worker.

    `by_backend`: each backend's default stages (by its kind); `cannot_fetch`: the backends
    whose servers cannot fetch image URLs; `fetcher`: None leaves image URLs as they are."""

    def __init__(self, by_backend: Mapping[str, frozenset[str]], *, cannot_fetch: frozenset[str] = _NONE,
                 settings: ParserSettings = DEFAULTS, count: Count = no_count,
                 fetcher: ImageFetcher | None = None, vision: VisionLimits | None = None) -> None:
        self._by_backend = dict(by_backend)
        self._cannot_fetch = cannot_fetch
        self.settings = settings
        self.count = count
        self._fetcher = fetcher
        self._vision = vision or VisionLimits()

    def stages(self, target: Target) -> frozenset[str]:
        entry = target.entry
        if entry is not None and entry.parsers is not None:
            return entry.parsers
        return self._by_backend.get(target.backend, _NONE)

    def stream(self, target: Target, body: Mapping[str, Any]) -> StreamChain | None:
        """The chain for a streamed answer, or None when no stage has anything to do."""
        stages = self.stages(target)
        if not stages:
            return None
        tools = offered_tools(body) if TOOL_CALLS in stages else {}
        reasoning = REASONING in stages
        schema = strict_schema(body) if OUTPUT_FORMAT in stages else None
        if not tools and not reasoning and schema is None:
            return None
        return StreamChain(reasoning=reasoning, tools=tools, settings=self.settings, count=self.count, schema=schema)

    def body(self, target: Target, request: Mapping[str, Any], answer: dict[str, Any]) -> None:
        """The chain over a whole answer, in place."""
        stages = self.stages(target)
        if not stages:
            return
        tools = offered_tools(request) if TOOL_CALLS in stages else {}
        if tools or REASONING in stages:
            parse_body(answer, reasoning=REASONING in stages, tools=tools, settings=self.settings, count=self.count)

    def schema(self, target: Target, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """The strict schema a non-streamed answer is checked against, when the stage applies."""
        return strict_schema(request) if OUTPUT_FORMAT in self.stages(target) else None

    def may_inline(self, chain: tuple[Target, ...]) -> bool:
        """Whether a backend that may answer cannot fetch image URLs, with the vision stage on."""
        if self._fetcher is None or not self._cannot_fetch:
            return False
        return any(VISION in self.stages(t) and not self._cannot_fetch.isdisjoint(t.backends) for t in chain)

    async def inline(self, chain: tuple[Target, ...], payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` with image URLs inlined when `may_inline`; else `payload` itself."""
        if not self.may_inline(chain):
            return payload
        assert self._fetcher is not None
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return payload
        inlined = await inline_images(messages, self._fetcher, max_images=self._vision.max_images, count=self.count)
        return payload if inlined is None else {**payload, "messages": inlined}
