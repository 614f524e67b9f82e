"""Fetching image URLs for the parser chain's vision stage (domain/parsers/vision.py), so a
backend that cannot fetch (llama.cpp) gets the image inline.

A request must not be able to make the gateway reach what only the gateway can reach, so:
only http and https; every address a host name resolves to must be global (not loopback,
private, link-local, CGNAT, multicast, reserved; an IPv4-mapped IPv6 address is judged as
its IPv4), else the URL is refused, and the connection goes to exactly the addresses that
were checked (the connector resolves through `_GuardedResolver`, with no DNS cache, so a
second lookup cannot rebind it). Host names given as IP literals are checked directly
(aiohttp does not resolve them). Redirects are followed by hand, each hop checked the same
way, at most `max_redirects`. An image is bounded in bytes (`Content-Length` and the bytes
actually read) and in time (connect to last byte), and must say it is an image.

`allow_networks` (`APPLIANCE_PARSERS__IMAGE_ALLOW_NETWORKS`) names networks that are
trusted anyway: none by default. Tests use it for their loopback image server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from appliance.domain.parsers.vision import FetchedImage, ImageRefused
from appliance.feature import Feature

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_PIECE = 64 * 1024


class _Refused(OSError):
    """Raised by the resolver so that aiohttp carries it out of the connector."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AddressPolicy:
    """Which addresses an image may come from: global ones, and `allow_networks`."""

    def __init__(self, allow_networks: Sequence[str] = ()) -> None:
        self._allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self._allowed):
            return None
        if address.is_global and not address.is_multicast:
            return None
        kind = ("loopback" if address.is_loopback else "private" if address.is_private
                else "link-local" if address.is_link_local else "non-global")
        return f"it points to a {kind} address"


class _GuardedResolver(AbstractResolver):
    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for item in found:
            why = self._policy.refusal(ipaddress.ip_address(item["host"]))
            if why is not None:
                raise _Refused(f"{host} resolves to {item['host']}: {why}")
        return found

    async def close(self) -> None:
        await self._inner.close()


class HttpImageFetcher:
    """`ImageFetcher` over its own aiohttp session (the upstream pool's connector caches DNS)."""

    def __init__(self, *, max_bytes: int, timeout_s: float, max_redirects: int = 3,
                 allow_networks: Sequence[str] = ()) -> None:
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._max_redirects = max_redirects
        self._policy = AddressPolicy(allow_networks)
        self._session: aiohttp.ClientSession | None = None

    def feature(self) -> Feature:
        return Feature("image_fetch", close=self.close)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=_GuardedResolver(self._policy), use_dns_cache=False,
                                             limit=32)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",),
                                                  headers={"User-Agent": "appliance-image-fetch"})
        return self._session

    async def fetch(self, url: str) -> FetchedImage:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._follow(url)
        except TimeoutError as exc:
            raise ImageRefused(f"no answer within {self._timeout_s:g} s", "timeout") from exc
        except _Refused as exc:
            raise ImageRefused(exc.message) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Refused):
                raise ImageRefused(exc.os_error.message) from exc
            raise ImageRefused(f"cannot connect to {exc.host}", "failed") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise ImageRefused(f"the fetch failed ({type(exc).__name__})", "failed") from exc

    async def _follow(self, url: str) -> FetchedImage:
        for _ in range(self._max_redirects + 1):
            self._check_url(url)
            async with self._client().get(url, allow_redirects=False, auto_decompress=True) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status != 200:
                    raise ImageRefused(f"the server answered {resp.status}", "failed")
                return await self._image(resp)
        raise ImageRefused(f"more than {self._max_redirects} redirects", "failed")

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Refused("only http and https URLs with a host are fetched")
        if parts.username or parts.password:
            raise _Refused("URLs with credentials are not fetched")
        try:
            literal: Any = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return  # a name: the resolver checks each of its addresses
        why = self._policy.refusal(literal)
        if why is not None:
            raise _Refused(why)

    async def _image(self, resp: aiohttp.ClientResponse) -> FetchedImage:
        media = resp.content_type or ""
        if not media.startswith("image/"):
            raise ImageRefused(f"not an image (Content-Type {media or 'missing'})", "failed")
        if resp.content_length is not None and resp.content_length > self._max_bytes:
            raise ImageRefused(f"larger than {self._max_bytes} bytes", "too_large")
        data = bytearray()
        async for piece in resp.content.iter_chunked(_PIECE):
            data += piece
            if len(data) > self._max_bytes:
                raise ImageRefused(f"larger than {self._max_bytes} bytes", "too_large")
        return FetchedImage(media, bytes(data))
