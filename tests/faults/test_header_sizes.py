"""A request head is bounded (`max_header_bytes`, 64 KiB, handed to Granian): past it the answer
is a 431 and the connection closes, the gateway keeps serving. Granian's own bound would be
408 KiB on HTTP/1 (hyper's buffer), so the 100 KiB case is refused by our setting alone."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from tests.conftest import Gateway

KIB = 1024


def _status(port: int, extra_header: bytes) -> int:
    """The status line's code for a GET /v1/models carrying `extra_header`. The head is sent
    from a thread: the gateway may answer (and close) before it has all of it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s\r\n"
                % (port, extra_header))

        def send() -> None:
            with contextlib.suppress(OSError):  # answered and closed before the rest arrived
                sock.sendall(head)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = sock.recv(64)
        sender.join(10)
    return int(answer.split()[1])


@pytest.mark.parametrize(("size", "status"), [(48 * KIB, 200), (100 * KIB, 431), (1024 * KIB, 431)],
                         ids=["48KiB", "100KiB", "1MiB"])
def test_a_request_head_past_the_bound_is_a_431(gateway: Gateway, size: int, status: int) -> None:
    assert _status(gateway.port, b"X-Big: %s\r\n" % (b"a" * size)) == status
    assert _status(gateway.port, b"") == 200  # and it keeps serving


def test_many_small_headers_are_bounded_too(gateway: Gateway) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))  # hyper's limit is 100 headers
    assert _status(gateway.port, many) == 431
    assert _status(gateway.port, b"") == 200
