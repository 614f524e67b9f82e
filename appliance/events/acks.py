"""JetStream publishing without a round trip per event: publish with a reply subject of our
own, and match the acks as they arrive. One subscription, a counter for tokens, no timer or
future per message (nats-py's `js.publish` costs a request and a `wait_for` each)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg


class AckTracker:
    """Publishes a batch of messages, then `settle()` waits for every ack of it."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = f"_APPL_ACK.{nc._nuid.next().decode()}"
        self._tokens = itertools.count()
        self._pending: set[str] = set()
        self._errors: list[str] = []
        self._settled = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._ack)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._sub.unsubscribe()
            self._sub = None

    async def publish(self, subject: str, msg_id: str, data: bytes) -> None:
        token = str(next(self._tokens))
        self._pending.add(token)
        self._settled.clear()
        await self._nc.publish(subject, data, reply=f"{self._prefix}.{token}", headers={"Nats-Msg-Id": msg_id})

    async def _ack(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        if token not in self._pending:
            return  # the ack of a batch given up on
        self._pending.discard(token)
        if b'"error"' in msg.data:
            self._errors.append(msg.data.decode(errors="replace")[:300])
        if not self._pending:
            self._settled.set()

    async def settle(self, timeout_s: float) -> list[str]:
        """Wait until everything published is acknowledged; returns JetStream's refusals (an
        empty list when all were stored). TimeoutError when some acks did not come; the
        batch is then forgotten, to be published again."""
        try:
            if self._pending:
                await asyncio.wait_for(self._settled.wait(), timeout_s)
            return self._errors
        finally:
            self._pending.clear()
            self._errors = []
