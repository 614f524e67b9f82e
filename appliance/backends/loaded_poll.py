"""Asks the replicas of multi-backend models, in the background, which models they have in
memory, so a request goes to a host that has its model warm instead of forcing a swap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

from appliance.domain.ports import ChatBackend
from appliance.domain.upstreams import Upstreams
from appliance.feature import Feature

log = logging.getLogger(__name__)


class LoadedModelPoll:
    def __init__(self, backends: Mapping[str, ChatBackend], names: Sequence[str], upstreams: Upstreams,
                 interval_s: float) -> None:
        self._backends = backends
        self._names = list(names)
        self._upstreams = upstreams
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self) -> None:
        answers = await asyncio.gather(*(self._backends[n].loaded_models() for n in self._names),
                                       return_exceptions=True)
        for name, answer in zip(self._names, answers, strict=True):
            self._upstreams.set_loaded(name, answer if isinstance(answer, frozenset) else None)

    async def _forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # a poll must never stop polling
                log.exception("loaded-model poll failed")
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        if self._names and self._interval > 0:
            self._task = asyncio.create_task(self._forever(), name="loaded-model-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def feature(self) -> Feature:
        return Feature("loaded-models", start=self.start, close=self.close)
