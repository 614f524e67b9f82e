"""What the kill tests drive and read: a few clients answering chats against whatever port a
gateway is on, and the events of those chats as JetStream and PostgreSQL hold them."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import orjson
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

# The two events every successful chat becomes (docs/events.md), each in its own stream.
CHAT_EVENTS = (("PIPELINE", "pipeline.knowledge.chat.persist"), ("TELEMETRY", "telemetry.knowledge.chat"))
PLAIN = {"model": "coder", "messages": [{"role": "user", "content": "hi"}]}
STREAMED = {**PLAIN, "stream": True}


class Load:
    """`clients` threads sending chats (every other one streamed) to `self.port`, which the
    test may change (a restarted gateway listens elsewhere), until `stop()` or `max_s`.

    A request is answered when the client had all of it: a 200 with its correlation id and,
    streamed, the chunked body to its terminator with `[DONE]` before it. A connection error
    (a killed process, a gateway still starting) is counted, and the client connects again.
    """

    def __init__(self, port: int, prefix: str, *, clients: int = 4, max_s: float = 20.0) -> None:
        self.port = port
        self.prefix = prefix
        self.answered: list[tuple[float, str]] = []  # (monotonic time, correlation id)
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_s
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def ids(self) -> set[str]:
        with self._lock:
            return {cid for _, cid in self.answered}

    def answered_since(self, since: float) -> int:
        with self._lock:
            return sum(1 for t, _ in self.answered if t > since)

    def wait_answers(self, n: int, timeout: float = 15.0) -> None:
        """Until `n` more requests are answered from now (the load is going)."""
        start, deadline = time.monotonic(), time.monotonic() + timeout
        while self.answered_since(start) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {n} answers in {timeout} s ({self.errors} errors)")
            time.sleep(0.02)

    def _client(self, n: int) -> None:
        conn: http.client.HTTPConnection | None = None
        i = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            cid = f"{self.prefix}-{n}-{i}"
            streamed = i % 2 == 1
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", "/v1/chat/completions", json.dumps(STREAMED if streamed else PLAIN),
                             {"Content-Type": "application/json", "X-Correlation-ID": cid})
                with self._lock:
                    self.sent += 1
                resp = conn.getresponse()
                body = resp.read()  # to the end: Content-Length, or the chunked terminator
                ok = resp.status == 200 and resp.getheader("x-correlation-id") == cid and \
                    (not streamed or body.endswith(b"data: [DONE]\n\n"))
                if ok:
                    with self._lock:
                        self.answered.append((time.monotonic(), cid))
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)  # a gateway starting again: do not crowd its two cores
        if conn is not None:
            conn.close()


@dataclass
class Tally:
    """Answers against the events that reached a store."""

    answered: int
    lost: list[str] = field(default_factory=list)        # answered, some event missing
    duplicated: list[str] = field(default_factory=list)  # an event stored more than once
    unanswered: int = 0                                   # events of requests the client never had whole

    def row(self) -> str:
        return (f"answered {self.answered}, lost {len(self.lost)}, duplicates {len(self.duplicated)}, "
                f"events of unanswered requests {self.unanswered}")


def tally(answered: set[str], stored: list[Counter[str]], prefix: str) -> Tally:
    """Each answered id must be in every counter once; ids of `prefix` found but not answered
    were recorded and then not (wholly) delivered to the client: neither lost nor duplicated."""
    out = Tally(len(answered))
    out.lost = sorted(cid for cid in answered if any(c[cid] == 0 for c in stored))
    out.duplicated = sorted({cid for c in stored for cid, n in c.items() if n > 1 and cid.startswith(prefix)})
    out.unanswered = len({cid for c in stored for cid in c if cid.startswith(prefix)} - answered)
    return out


def jetstream_chats(url: str, prefix: str) -> list[Counter[str]]:
    """Per chat event subject: how many events of each correlation id (of `prefix`) it holds."""
    async def read() -> list[Counter[str]]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            out = []
            for stream, subject in CHAT_EVENTS:
                counts: Counter[str] = Counter()
                sub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(
                    ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=10))
                left = (await sub.consumer_info()).num_pending or 0
                while left > 0:
                    batch = await sub.fetch(min(left, 1000), timeout=5)
                    left -= len(batch)
                    for msg in batch:
                        cid = orjson.loads(msg.data)["correlation_id"]
                        if cid.startswith(prefix):
                            counts[cid] += 1
                await sub.unsubscribe()
                out.append(counts)
            return out
        finally:
            await nc.close()
    return asyncio.run(read())


def postgres_chats(db_url: str, prefix: str) -> list[Counter[str]]:
    """Rows per correlation id (of `prefix`) in chat_history, where the persister puts
    `pipeline.knowledge.chat.persist`."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT correlation_id, count(*) FROM chat_history WHERE correlation_id LIKE %s"
                            " GROUP BY correlation_id", (prefix + "-%",)).fetchall()
    return [Counter({cid: int(n) for cid, n in rows})]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Granian's workers and the relay, of `appliance serve`)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def workers(serve_pid: int) -> list[int]:
    """Granian's workers of an `appliance serve` process: the children forked with its own
    command line (the relay and any other child process run `appliance <something else>`)."""
    argv = cmdline(serve_pid)
    return [p for p in children(serve_pid) if cmdline(p) == argv]


def connections(pid: int, port: int) -> int:
    """Established TCP connections on local `port` that process `pid` holds (a worker's clients)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    established.add(fields[9])  # the socket's inode
    held = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                held += target.startswith("socket:[") and target[8:-1] in established
    return held


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
