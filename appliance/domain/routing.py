"""Choosing a backend for a model name: explicit catalog entries, then glob routes, then
models the backends themselves reported."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from appliance.domain.errors import ModelNotFound

_CACHE_MAX: Final = 4096


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """An explicit catalog model: an alias or rename onto one backend or several replicas,
    with its card (description, examples), prices and the models to fall back on."""

    id: str
    backends: tuple[str, ...]
    upstream_id: str
    owned_by: str = "appliance"
    context_length: int | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    fallbacks: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    parsers: frozenset[str] | None = None   # the output parser stages; None: its backend kind's default

    @property
    def backend(self) -> str:
        """The first backend (the one named when there are no replicas)."""
        return self.backends[0]

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_input_per_mtok + completion_tokens * self.price_output_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class RouteRule:
    pattern: str
    backend: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request may go: `upstream_model` is sent, `requested` is shown to the
    client; `backends` are the replicas that serve it (one, unless the catalog lists more)."""

    requested: str
    backend: str
    upstream_model: str
    entry: ModelEntry | None = None

    @property
    def renamed(self) -> bool:
        return self.requested != self.upstream_model

    @property
    def backends(self) -> tuple[str, ...]:
        return self.entry.backends if self.entry is not None else (self.backend,)

    @property
    def model_id(self) -> str:
        """The catalog id when there is an entry (what fallbacks and routers name), else the name."""
        return self.entry.id if self.entry is not None else self.requested


class ModelRouter:
    """Resolves a requested model name to a `Target`; first match wins within each tier.

    Tiers: explicit entries (aliases and renames), glob routes in catalog order, then models
    discovered from the backends' own `/models` lists (`update_discovered`).
    """

    def __init__(self, entries: Iterable[ModelEntry], rules: Iterable[RouteRule]) -> None:
        self.entries: Mapping[str, ModelEntry] = {e.id: e for e in entries}
        self.rules: tuple[RouteRule, ...] = tuple(rules)
        self._discovered: dict[str, str] = {}
        self._cache: dict[str, Target] = {}

    def update_discovered(self, model_to_backend: Mapping[str, str]) -> None:
        self._discovered = dict(model_to_backend)
        self._cache.clear()

    def find(self, model: str) -> Target | None:
        hit = self._cache.get(model)
        if hit is not None:
            return hit
        target = self._resolve(model)
        if target is not None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[model] = target
        return target

    def resolve(self, model: str) -> Target:
        target = self.find(model)
        if target is None:
            raise ModelNotFound(model)
        return target

    def _resolve(self, model: str) -> Target | None:
        entry = self.entries.get(model)
        if entry is not None:
            return Target(model, entry.backend, entry.upstream_id, entry)
        for rule in self.rules:
            if fnmatch.fnmatchcase(model, rule.pattern):
                return Target(model, rule.backend, model)
        backend = self._discovered.get(model)
        if backend is not None:
            return Target(model, backend, model)
        return None
