"""The vision stage's image fetcher (backends/image_fetch.py) against a local HTTP server: the
address checks (every resolved address, literals, redirects), and the byte bound."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.backends.image_fetch import AddressPolicy, HttpImageFetcher, _GuardedResolver
from appliance.domain.parsers.vision import ImageRefused

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.2:1/x.png")
                self.end_headers()
                return
            body = PNG * (100 if self.path == "/big.png" else 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if self.path == "/page" else "image/png")
            self.end_headers()  # no Content-Length: the bound must hold on the bytes read
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


def fetcher(**kw: Any) -> HttpImageFetcher:
    return HttpImageFetcher(max_bytes=kw.pop("max_bytes", 1024), timeout_s=5, allow_networks=["127.0.0.1/32"], **kw)


async def test_an_allowed_image_is_fetched_and_the_bounds_hold(server: str) -> None:
    f = fetcher()
    try:
        image = await f.fetch(f"{server}/cat.png")
        assert image.media_type == "image/png" and image.data == PNG
        with pytest.raises(ImageRefused) as big:
            await f.fetch(f"{server}/big.png")
        assert big.value.outcome == "too_large"
        with pytest.raises(ImageRefused, match="not an image"):
            await f.fetch(f"{server}/page")
        with pytest.raises(ImageRefused, match="loopback") as hop:   # the redirect's target is checked too
            await f.fetch(f"{server}/redirect")
        assert hop.value.outcome == "refused"
    finally:
        await f.close()


async def test_by_default_loopback_is_refused_before_connecting(server: str) -> None:
    f = HttpImageFetcher(max_bytes=1024, timeout_s=5)
    try:
        for url in (f"{server}/cat.png", "http://localhost:9/x.png", "ftp://example.com/x.png"):
            with pytest.raises(ImageRefused) as err:
                await f.fetch(url)
            assert err.value.outcome == "refused"
    finally:
        await f.close()


async def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    class Inner:
        async def resolve(self, host: str, port: int, family: int) -> list[dict[str, Any]]:
            return [{"hostname": host, "host": h, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
                    for h in ("93.184.215.14", "192.168.1.10")]

    resolver = _GuardedResolver(AddressPolicy())
    resolver._inner = Inner()  # type: ignore[assignment]
    with pytest.raises(OSError, match=r"192\.168\.1\.10"):
        await resolver.resolve("images.example", 80)


def test_address_policy() -> None:
    import ipaddress

    policy = AddressPolicy(["192.168.1.20/32"])
    refused = [a for a in ("127.0.0.1", "10.0.0.1", "100.64.0.1", "169.254.169.254", "::1", "::ffff:10.0.0.1",
                           "fd00::1", "224.0.0.1", "0.0.0.0", "192.168.1.21")
               if policy.refusal(ipaddress.ip_address(a)) is not None]
    assert len(refused) == 10
    assert policy.refusal(ipaddress.ip_address("192.168.1.20")) is None
    assert policy.refusal(ipaddress.ip_address("93.184.215.14")) is None
