"""Which backend answers a request: the model's replicas, then its fallbacks, in order, until
one answers before the first byte reached the client.

A try moves on when the backend is unreachable, resets, times out, answers 5xx or 429; a
backend's own refusal of the request (any other 4xx) is the client's answer and ends the
walk. Replicas come best first (`Upstreams.order`: breaker, loaded model, outstanding
requests); a replica whose breaker is open costs nothing. A model whose `context_length`
the prompt does not fit is passed over for a fallback that fits (counted by the backend's
`/tokenize` when it has one, else estimated conservatively); when only the estimate says
so and nothing fits, the model is tried anyway and its backend decides.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from appliance.domain.errors import (
    BackendRejected,
    BackendsResting,
    BackendTimeout,
    BackendUnavailable,
    InvalidRequest,
    UpstreamError,
)
from appliance.domain.ports import ChatBackend
from appliance.domain.routing import Target
from appliance.domain.thinking import thinking_fields
from appliance.domain.upstreams import Upstreams
from appliance.wire.thinking import THINKING

log = logging.getLogger(__name__)
T = TypeVar("T")


def worth_another_try(exc: UpstreamError) -> bool:
    if isinstance(exc, BackendRejected):
        return exc.upstream_status == 429
    return isinstance(exc, BackendUnavailable | BackendTimeout)


def seconds(retry_after: str | None) -> float | None:
    """A Retry-After in seconds (the HTTP-date form is rare from LLM servers: ignored)."""
    if not retry_after:
        return None
    try:
        value = float(retry_after)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


@dataclass(slots=True)
class Answered:
    """Who answered: the model (after a fallback, the fallback's), its backend, what was sent."""

    target: Target
    backend: str
    payload: dict[str, Any]
    ttfb_ms: float
    tried: tuple[str, ...]     # backends that failed first, in order


class Walk:
    """Tries one request along its chain of models; see the module docstring."""

    def __init__(self, backends: Mapping[str, ChatBackend], upstreams: Upstreams, *,
                 dumps: Callable[[Any], bytes], bytes_per_token: float, clock: Callable[[], float]) -> None:
        self._backends = backends
        self._upstreams = upstreams
        self._dumps = dumps
        self._bytes_per_token = bytes_per_token
        self._clock = clock

    async def run(self, chain: Sequence[Target], base: dict[str, Any], extensions: Mapping[str, Any],
                  call: Callable[[ChatBackend, dict[str, Any]], Awaitable[T]]) -> tuple[T, Answered]:
        """`call(backend, payload)` along the chain until one answers. The winner's backend
        stays counted as outstanding: the caller says `done` when its answer has gone out."""
        fitting = await self._fitting(chain, base)
        tried: list[str] = []
        last: UpstreamError | None = None
        for target in fitting:
            order = self._upstreams.order(target.backends, target.upstream_model)
            for name in order:
                if not self._upstreams.start(name):
                    continue
                backend = self._backends[name]
                payload = self._payload(base, target, backend, extensions)
                began = self._clock()
                try:
                    result = await call(backend, payload)
                except UpstreamError as exc:
                    self._upstreams.done(name)
                    if not worth_another_try(exc):
                        self._upstreams.succeeded(name, (self._clock() - began) * 1000)  # it answered
                        raise
                    self._upstreams.failed(name, seconds(exc.retry_after))
                    log.warning("backend failed before the first byte; trying the next",
                                extra={"backend": name, "model": target.model_id, "error": type(exc).__name__})
                    tried.append(name)
                    last = exc
                    continue
                except BaseException:
                    self._upstreams.done(name)
                    self._upstreams.abandoned(name)
                    raise
                ttfb = (self._clock() - began) * 1000
                self._upstreams.succeeded(name, ttfb)
                return result, Answered(target, name, payload, ttfb, tuple(tried))
        if last is not None:
            raise last
        names = sorted({b for t in fitting for b in t.backends})
        wait = self._upstreams.retry_in(names)
        raise BackendsResting(f"no backend for '{chain[0].requested}' is taking requests now "
                                 f"({', '.join(names)}: failing, retried in {math.ceil(wait)} s)",
                                 backend=names[0] if names else "", retry_after=str(max(1, math.ceil(wait))))

    def _payload(self, base: dict[str, Any], target: Target, backend: ChatBackend,
                 extensions: Mapping[str, Any]) -> dict[str, Any]:
        payload = base if base.get("model") == target.upstream_model else {**base, "model": target.upstream_model}
        if extensions:
            capabilities = backend.capabilities
            accepted = capabilities.extension_fields
            extra = {k: v for k, v in extensions.items() if k in accepted}
            wish = extensions.get(THINKING)
            if wish is not None:  # said in the field this backend reads, not as itself
                extra.update(thinking_fields(wish, capabilities.thinking, payload))
            dropped = set(extensions) - set(extra) - {THINKING}
            if dropped:
                log.debug("extension fields not sent: the backend does not take them",
                          extra={"backend": backend.name, "fields": sorted(dropped)})
            if extra:
                payload = {**payload, **extra}
        return payload

    async def _fitting(self, chain: Sequence[Target], base: dict[str, Any]) -> list[Target]:
        """The chain without the models whose context the prompt does not fit."""
        if all(t.entry is None or t.entry.context_length is None for t in chain):
            return list(chain)
        estimate = self.estimate(base)
        fits: list[Target] = []
        guessed: list[Target] = []
        for target in chain:
            limit = target.entry.context_length if target.entry is not None else None
            if limit is None or estimate <= limit:
                fits.append(target)
                continue
            counted = await self._count(target, base)
            if counted is None:
                guessed.append(target)
            elif counted <= limit:
                fits.append(target)
            else:
                log.info("prompt does not fit the model's context; passing it over",
                         extra={"model": target.model_id, "tokens": counted, "context_length": limit})
        if fits:
            return fits
        if guessed:
            return guessed  # only an estimate says no: let the backend decide
        raise InvalidRequest(f"The prompt does not fit the context of '{chain[0].requested}' "
                             "or of any of its fallbacks", param="messages", code="context_length_exceeded")

    def estimate(self, base: Mapping[str, Any]) -> int:
        """Tokens the request needs at most: its messages' bytes at `bytes_per_token` (an
        overestimate for most text) plus the answer it asks room for."""
        try:
            size = len(self._dumps(base.get("messages") or []))
        except (TypeError, ValueError):
            size = 0
        wanted = base.get("max_completion_tokens") or base.get("max_tokens") or 0
        return int(size / self._bytes_per_token) + (wanted if isinstance(wanted, int) else 0)

    async def _count(self, target: Target, base: dict[str, Any]) -> int | None:
        for name in target.backends:
            backend = self._backends[name]
            if backend.capabilities.tokenize and not self._upstreams.breakers[name].refusing:
                try:
                    counted = await backend.count_tokens({**base, "model": target.upstream_model})
                except (TimeoutError, UpstreamError):
                    return None
                if counted is not None:
                    wanted = base.get("max_completion_tokens") or base.get("max_tokens") or 0
                    return counted + (wanted if isinstance(wanted, int) else 0)
        return None
