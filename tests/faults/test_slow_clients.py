"""Slow readers and a fast upstream: the gateway reads each upstream stream only as fast as its
client drains it, so neither its memory nor what it has read ahead grows with the answer.

50 clients each stream a ~33 MB answer (2,000 chunks padded to 16 KiB) and read 512 bytes every
100 ms. What can sit between the upstream and a client is bounded: the kernel's send buffer on
the gateway's client socket (up to `tcp_wmem`'s maximum), Granian's four frames and its HTTP/1
buffer (`max_header_bytes`), the gateway's read-ahead, and the kernel buffers of the upstream
connection (its receive buffer fixed by `upstream_socket_buffer_bytes`, the fake LLM's send
buffer up to `tcp_wmem`). So the fake LLM must still be writing every stream, having written far
less than the answers, and the gateway worker's RSS must stay flat. Numbers are printed (`-s`)
for docs/faults.md.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway
from tests.perf.bench_gateway import rss_mb

CLIENTS = 50
TOKENS, PAD_BYTES = 2000, 16 * 1024          # ~33 MB per answer
READ_BYTES, READ_EVERY_S, SLOW_S = 512, 0.1, 8.0
CLIENT_RCVBUF = 16 * 1024                    # a slow reader's small window
RSS_GROWTH_MAX_MIB = 50.0                    # the worker's growth for 50 stalled streams (docs/faults.md)


@pytest.fixture
def slow_gateway(llm: FakeLLM, tmp_path: Path) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path / "gw", catalog_for(llm.port))
    try:
        yield gw
    finally:
        procs.stop(gw.proc)


def _wmem_max() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def _stream(port: int, body: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)  # before connect: the window it offers
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))
    sock.setblocking(False)
    return sock


def _chat(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (port, len(body), body))
        head = sock.recv(64)
    return int(head.split()[1])


def _settled_rss(gw: Gateway) -> float:
    """The worker's RSS once a first chat has loaded what it loads and it stopped moving."""
    assert _chat(gw.port) == 200
    last = rss_mb(gw.proc.pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_mb(gw.proc.pid)
        if abs(now - last) < 1.0:
            return now
        last = now
    return last


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_slow_readers_hold_back_the_upstream_and_the_worker_stays_flat(llm: FakeLLM, slow_gateway: Gateway) -> None:
    gw = slow_gateway
    before = _settled_rss(gw)
    body = json.dumps({"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                       "fake": {"tokens": TOKENS, "pad_bytes": PAD_BYTES}}).encode()
    answer_bytes = TOKENS * (PAD_BYTES + 200)
    socks = [_stream(gw.port, body) for _ in range(CLIENTS)]
    drained = [0] * CLIENTS
    peak = before
    try:
        started = time.monotonic()
        while time.monotonic() - started < SLOW_S:
            for i, sock in enumerate(socks):
                with contextlib.suppress(BlockingIOError):  # nothing arrived since the last read
                    drained[i] += len(sock.recv(READ_BYTES))
            peak = max(peak, rss_mb(gw.proc.pid))
            time.sleep(READ_EVERY_S)
        stats = llm.stats()
    finally:
        for sock in socks:
            sock.close()
    written = stats["stream_bytes"] / CLIENTS
    print(f"\nslow clients: {CLIENTS} x {answer_bytes / 1e6:.0f} MB answers; worker RSS {before:.0f} -> peak "
          f"{peak:.0f} MiB (+{peak - before:.1f}); upstream wrote {written / 1e6:.2f} MB per stream, clients "
          f"drained {sum(drained) / CLIENTS / 1e3:.0f} kB each; upstream {stats}")
    assert stats["started"] == CLIENTS and stats["completed"] == 0, stats  # every upstream stream still open
    assert all(drained), f"{drained.count(0)} of {CLIENTS} clients got nothing"
    # Read no faster than drained: what the upstream wrote is what its client read plus two kernel
    # send buffers (the fake LLM's, the gateway's to the client) and the gateway's own share.
    assert written < 2 * _wmem_max() + 1024 * 1024 < answer_bytes / 2, written
    assert peak - before < RSS_GROWTH_MAX_MIB, (before, peak)
    # The clients left: the gateway drops each upstream stream and keeps serving.
    assert _wait(lambda: llm.stats()["cancelled"] == CLIENTS, 15), llm.stats()
    assert _chat(gw.port) == 200
