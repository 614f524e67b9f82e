"""JetStream publishing without a round trip per event: publish with a reply subject of our
own, and match the acks as they arrive. One subscription, a counter for tokens, no timer or
future per message (nats-py's `js.publish` costs a request and a `wait_for` each, which at
gateway rates is most of a worker's spare CPU)."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

Item = tuple[str, str, bytes]  # subject, msg id, data


class AckTracker:
    """Publishes items and keeps each until JetStream acknowledges it.

    `on_ack(n)` is told how many were stored; `expired(timeout)` returns the items whose ack
    did not come in time (and forgets them) so the caller can spool them again.
    """

    def __init__(self, nc: NATS, on_ack: Callable[[int], None], on_error: Callable[[Item, str], None]) -> None:
        self._nc = nc
        self._prefix = f"_APPL_ACK.{nc._nuid.next().decode()}"
        self._tokens = itertools.count()
        self.pending: dict[str, tuple[float, Item]] = {}
        self._on_ack = on_ack
        self._on_error = on_error
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._ack)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._sub.unsubscribe()
            self._sub = None

    async def publish(self, item: Item) -> None:
        token = str(next(self._tokens))
        self.pending[token] = (time.monotonic(), item)
        await self._nc.publish(item[0], item[2], reply=f"{self._prefix}.{token}", headers={"Nats-Msg-Id": item[1]})

    async def _ack(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        entry = self.pending.pop(token, None)
        if entry is None:
            return
        if b'"error"' in msg.data:
            self._on_error(entry[1], msg.data.decode(errors="replace"))
        else:
            self._on_ack(1)

    def expired(self, timeout_s: float) -> list[Item]:
        deadline = time.monotonic() - timeout_s
        late = []
        for token, (sent, _) in self.pending.items():  # oldest first: stop at the first in time
            if sent >= deadline:
                break
            late.append(token)
        return [self.pending.pop(token)[1] for token in late]

    def take_all(self) -> list[Item]:
        items = [item for _, item in self.pending.values()]
        self.pending.clear()
        return items
