"""The model directory: catalog entries plus what each backend reports, cached with a TTL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from appliance.domain.errors import UpstreamError
from appliance.domain.ports import ChatBackend
from appliance.domain.routing import ModelRouter

log = logging.getLogger(__name__)


class ModelDirectory:
    """Lists and looks up models. A backend that does not answer is skipped, never fatal."""

    def __init__(
        self,
        router: ModelRouter,
        backends: Mapping[str, ChatBackend],
        *,
        ttl_s: float,
        discover: Mapping[str, bool] | None = None,
        virtual: Sequence[Mapping[str, Any]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._router = router
        self._backends = backends
        self._discover = discover or {}
        self._ttl = ttl_s
        self._clock = clock
        self._fetched_at = float("-inf")
        self._discovered: list[tuple[str, dict[str, Any]]] = []
        self._lock = asyncio.Lock()
        self._virtual = [dict(v) for v in virtual]  # routers: model objects no backend serves directly

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            if not force and self._clock() - self._fetched_at < self._ttl:
                return
            names = [n for n in self._backends if self._discover.get(n, True)]
            results = await asyncio.gather(*(self._backends[n].list_models() for n in names), return_exceptions=True)
            found: list[tuple[str, dict[str, Any]]] = []
            for name, result in zip(names, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, UpstreamError):
                        log.warning("model discovery failed", extra={"backend": name, "error": repr(result)})
                    continue
                found.extend((name, m) for m in result if isinstance(m, dict) and isinstance(m.get("id"), str))
            self._discovered = found
            owner: dict[str, str] = {}
            for backend, model in found:
                owner.setdefault(model["id"], backend)
            self._router.update_discovered(owner)
            self._fetched_at = self._clock()

    async def listing(self) -> list[dict[str, Any]]:
        """OpenAI `model` objects: catalog entries first, then discovered models not shadowed."""
        await self.refresh()
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for entry in self._router.entries.values():
            item: dict[str, Any] = {"id": entry.id, "object": "model", "created": 0, "owned_by": entry.owned_by,
                                    "backend": entry.backend}
            if entry.context_length:
                item["context_length"] = entry.context_length
            if entry.description:
                item["description"] = entry.description
            out.append(item)
            seen.add(entry.id)
        for item in self._virtual:
            out.append(dict(item))
            seen.add(item["id"])
        for backend, model in self._discovered:
            if model["id"] in seen:
                continue
            seen.add(model["id"])
            out.append({"id": model["id"], "object": "model", "created": int(model.get("created") or 0),
                        "owned_by": str(model.get("owned_by") or backend), "backend": backend})
        return out

    async def get(self, model_id: str) -> dict[str, Any] | None:
        return next((m for m in await self.listing() if m["id"] == model_id), None)
