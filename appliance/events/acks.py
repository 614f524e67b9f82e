"""JetStream publishing without a round trip per event, and mostly without an ack per event.

Acknowledged mode: every message carries a reply subject of ours, and the acks are matched
as they arrive (one subscription, a counter for tokens; nats-py's `js.publish` costs a
request and a `wait_for` each). A batch goes out as HPUB protocol frames we build, joined
into one write to nats-py's outgoing buffer (nats_private.py, the one module touching
nats-py's private surface): its `publish()` spends more per message on checking and encoding
headers than we spend on the whole frame (docs/benchmarks.md).

Chained mode: each message also carries `Nats-Expected-Last-Msg-Id`, the id of the message
before it in its stream, and only the last message per stream asks for an ack. JetStream
stores a message only when the last id it stored is that one, so the last message of a
chain is stored only if the one before it was the last stored, and so on back to the first:
if any message is not stored (refused, lost in a reconnection, another publisher's message
in between) every later one is refused too, the last one with an error ack. A good ack of
the last message proves the whole chain is in the stream (a message JetStream dropped as a
duplicate was there already). Fewer acks are less CPU for nats-server and the relay, and so
more left for a gateway sharing their cores (docs/benchmarks.md).

`publish()` chains when it knows each stream's last id (from the previous batch) and falls
back to acknowledged mode, which tells it the last ids again, when a chain breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from appliance.events.nats_private import FrameWriter

log = logging.getLogger(__name__)

EXPECTED_LAST_ID = "Nats-Expected-Last-Msg-Id"
RETRY_CHAIN_AFTER = 8  # batches in acknowledged mode after a broken chain (another publisher, say)

Message = tuple[str, str, bytes]  # subject, Nats-Msg-Id, payload


class AckTracker:
    """Publishes batches of messages and waits until JetStream stored all of each."""

    def __init__(self, nc: NATS, stream_of: Callable[[str], str]) -> None:
        self._nc = nc
        self._write = FrameWriter(nc).write
        self._stream_of = stream_of
        self._prefix = f"_APPL_ACK.{nc.new_inbox().rpartition('.')[2]}"  # a NUID: unique per tracker
        self._tokens = itertools.count()
        self._pending: set[str] = set()
        self._acks: dict[str, bytes] = {}
        self._settled = asyncio.Event()
        self._sub: Any = None
        self._last: dict[str, str] = {}  # stream -> the id of the last message we stored in it
        self._unchained = 0              # batches to publish acknowledged before chaining again
        self.chains_broken = 0

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._ack)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._sub.unsubscribe()
            self._sub = None

    async def publish(self, messages: Sequence[Message], timeout_s: float) -> list[str]:
        """Publish `messages` in order and wait until all are stored. Returns JetStream's
        refusals (empty when everything was stored, duplicates included); TimeoutError or a
        connection error when acks did not come: the batch is then to be published again."""
        try:
            if self._unchained == 0 and {self._stream_of(m[0]) for m in messages} <= self._last.keys():
                if await self._chained(messages, timeout_s):
                    return []
                self.chains_broken += 1
                self._unchained = RETRY_CHAIN_AFTER
                log.debug("event chain broken; publishing with an ack per event")
            self._unchained = max(0, self._unchained - 1)
            return await self._acknowledged(messages, timeout_s)
        except BaseException:
            self._last.clear()  # where the streams are is unknown now
            raise

    async def _chained(self, messages: Sequence[Message], timeout_s: float) -> bool:
        streams = [self._stream_of(subject) for subject, _, _ in messages]
        last_of = {stream: i for i, stream in enumerate(streams)}
        previous = dict(self._last)
        proofs: dict[str, str] = {}  # token -> stream
        frames: list[bytes] = []
        for i, ((subject, msg_id, data), stream) in enumerate(zip(messages, streams, strict=True)):
            expected = previous[stream]
            previous[stream] = msg_id
            reply = ""
            if last_of[stream] == i:
                token = self._send_token()
                proofs[token] = stream
                reply = f"{self._prefix}.{token}"
            frames.append(hpub_frame(subject, reply, msg_id, data, expected))
        await self._send(frames)
        acks = await self._settle(timeout_s)
        for token, stream in proofs.items():
            ack = _parse(acks.get(token, b""))
            if "error" in ack or ack.get("duplicate") or ack.get("stream") != stream:
                return False
        self._last.update(previous)
        return True

    async def _acknowledged(self, messages: Sequence[Message], timeout_s: float) -> list[str]:
        tokens = []
        frames: list[bytes] = []
        for subject, msg_id, data in messages:
            token = self._send_token()
            tokens.append(token)
            frames.append(hpub_frame(subject, f"{self._prefix}.{token}", msg_id, data))
        await self._send(frames)
        acks = await self._settle(timeout_s)
        refused: list[str] = []
        newest: dict[str, tuple[int, str]] = {}  # stream -> (sequence, id) of the newest message stored now
        for token, (_, msg_id, _) in zip(tokens, messages, strict=True):
            raw = acks[token]
            ack = _parse(raw)
            if "error" in ack or "seq" not in ack:
                refused.append(raw.decode(errors="replace")[:300])
            elif not ack.get("duplicate"):
                stream, seq = str(ack.get("stream")), int(ack["seq"])
                if seq > newest.get(stream, (0, ""))[0]:
                    newest[stream] = (seq, msg_id)
        self._last.update({stream: msg_id for stream, (_, msg_id) in newest.items()})
        return refused

    async def _send(self, frames: list[bytes]) -> None:
        """Queue the frames on the connection and have them written (nats-py's own publish
        path, minus its per-message work)."""
        if not self._nc.is_connected:
            raise ConnectionError("NATS connection lost")
        await self._write(b"".join(frames))

    def _send_token(self) -> str:
        token = str(next(self._tokens))
        self._pending.add(token)
        self._settled.clear()
        return token

    async def _ack(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        if token not in self._pending:
            return  # the ack of a batch given up on
        self._pending.discard(token)
        self._acks[token] = msg.data
        if not self._pending:
            self._settled.set()

    async def _settle(self, timeout_s: float) -> dict[str, bytes]:
        """Every ack asked for since the last settle; TimeoutError when some did not come
        (those are forgotten)."""
        try:
            if self._pending:
                await asyncio.wait_for(self._settled.wait(), timeout_s)
            return self._acks
        finally:
            self._pending.clear()
            self._acks = {}


def hpub_frame(subject: str, reply: str, msg_id: str, data: bytes, expected_last_id: str = "") -> bytes:
    """One HPUB protocol message with a `Nats-Msg-Id` header and, when given, the expected
    last one (subject and reply are ours, ids come from validated correlation ids: none can
    hold whitespace)."""
    expect = f"{EXPECTED_LAST_ID}: {expected_last_id}\r\n" if expected_last_id else ""
    headers = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n{expect}\r\n".encode()
    route = f"{subject} {reply}" if reply else subject
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (route.encode(), len(headers), len(headers) + len(data), headers, data)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        ack = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {"error": raw.decode(errors="replace")}
    return ack if isinstance(ack, dict) else {"error": repr(ack)}
