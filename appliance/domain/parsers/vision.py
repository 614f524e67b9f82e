"""Image parts given as URLs, fetched and inlined as `data:` URLs for backends that cannot
fetch them themselves (llama.cpp, LM Studio, Ollama: `Capabilities.fetches_image_urls`).

Only `http(s)` URLs are fetched, through the `ImageFetcher` port, which bounds each image in
bytes and time and refuses loopback, private and other non-global addresses (every address
a name resolves to; docs/parsers.md). A refused or failed image is the client's problem to
fix: a 400 naming the part, not a silent drop.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.domain.errors import InvalidRequest
from appliance.domain.parsers.stages import VISION, Count, no_count


@dataclass(frozen=True, slots=True)
class FetchedImage:
    media_type: str
    data: bytes


class ImageRefused(Exception):
    """An image URL the fetcher would not or could not fetch. `outcome` is the counter's
    label (refused, too_large, timeout, failed); the message is for the client."""

    def __init__(self, message: str, outcome: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome


class ImageFetcher(Protocol):
    async def fetch(self, url: str) -> FetchedImage:
        """The image at `url`; raises `ImageRefused`."""
        ...


def image_urls(messages: Any) -> list[tuple[str, str]]:
    """`(where, url)` for every image part whose URL is http(s)."""
    found: list[tuple[str, str]] = []
    if not isinstance(messages, list):
        return found
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if isinstance(url, str) and url[:8].lower().startswith(("http://", "https://")):
                found.append((f"messages[{i}].content[{j}].image_url.url", url))
    return found


async def inline_images(messages: list[Any], fetcher: ImageFetcher, *, max_images: int,
                        count: Count = no_count) -> list[Any] | None:
    """`messages` with every http(s) image URL replaced by its data URL, or None when there
    was none. Raises `InvalidRequest` naming the part that could not be inlined."""
    found = image_urls(messages)
    if not found:
        return None
    if len(found) > max_images:
        raise InvalidRequest(f"At most {max_images} image URLs per request can be fetched for this model; "
                             f"send the others inline (data URLs)", param=found[max_images][0])
    urls = sorted({url for _, url in found})
    results = await asyncio.gather(*(fetcher.fetch(u) for u in urls), return_exceptions=True)
    inlined: dict[str, str] = {}
    for url, result in zip(urls, results, strict=True):
        if isinstance(result, ImageRefused):
            count(VISION, result.outcome)
            where = next(w for w, u in found if u == url)
            raise InvalidRequest(f"{where}: the image could not be fetched: {result.message}", param=where,
                                 code="image_url_unavailable")
        if isinstance(result, BaseException):
            raise result
        inlined[url] = f"data:{result.media_type};base64,{base64.b64encode(result.data).decode('ascii')}"
        count(VISION, "inlined")
    out: list[Any] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for part in content:
            image = part.get("image_url") if isinstance(part, Mapping) and part.get("type") == "image_url" else None
            given = image.get("url") if isinstance(image, Mapping) else image
            if isinstance(given, str) and given in inlined:
                kept = dict(image) if isinstance(image, Mapping) else {}
                part = {**part, "image_url": {**kept, "url": inlined[given]}}
            parts.append(part)
        out.append({**message, "content": parts})
    return out
