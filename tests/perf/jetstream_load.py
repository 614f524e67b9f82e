"""JetStream's own share of the events cost: publishes what a gateway's relay would, at a
given rate, with as little client work as possible (the relay's frames, built once per tick
on a raw socket, one ack asked per tick), so nearly all the CPU it causes is nats-server's.

    python -m tests.perf.jetstream_load HOST PORT RATE

RATE messages per second, alternately to `pipeline.knowledge.chat.persist` (~400 bytes)
and `telemetry.knowledge.chat` (~250 bytes), each with its own `Nats-Msg-Id`, until killed.
The streams must exist (an events-on gateway's relay makes them). bench_events runs it
beside an events-off gateway at the rate its events-on gateway published.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

from appliance.events.acks import hpub_frame

TICK_S = 0.05
SUBJECTS = (("pipeline.knowledge.chat.persist", b'{"schema_version":1,"pad":"' + b"p" * 370 + b'"}'),
            ("telemetry.knowledge.chat", b'{"schema_version":1,"pad":"' + b"t" * 220 + b'"}'))


def frames(first: int, count: int, prefix: str) -> bytes:
    """The relay's HPUB frames for messages `first`..`first + count - 1`; the last asks for an ack."""
    last = first + count - 1
    return b"".join(hpub_frame(SUBJECTS[n % 2][0], f"_LOAD.{n}" if n == last else "", f"{prefix}-{n}", SUBJECTS[n % 2][1])
                    for n in range(first, first + count))


def main() -> int:
    host, port, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.create_connection((host, port))
    sock.recv(4096)  # the server's INFO
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\nSUB _LOAD.* 1\r\n')
    prefix = f"load-{os.getpid()}-{time.time_ns()}"
    per_tick = max(1, round(rate * TICK_S))
    sent, due = 0, time.monotonic()
    while True:
        sock.sendall(frames(sent, per_tick, prefix))
        sent += per_tick
        due += TICK_S
        while (wait := due - time.monotonic()) > 0:  # read acks (and answer pings) until the next tick
            if select.select([sock], [], [], wait)[0]:
                data = sock.recv(1 << 16)
                if not data:
                    return 1
                if b"PING\r\n" in data:
                    sock.sendall(b"PONG\r\n")


if __name__ == "__main__":
    raise SystemExit(main())
