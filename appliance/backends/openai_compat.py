"""An OpenAI-compatible chat backend over aiohttp: vLLM, llama.cpp, LM Studio, Ollama, cloud.

aiohttp was chosen by measurement: of the clients tried (httpx, httpx over an aiohttp
transport), only it let a Falcon + Granian relay clear the gateway's throughput bar
(docs/benchmarks.md). aiohttp and asyncio errors are translated here into the domain's
`UpstreamError` tree.

What it holds of an answer is bounded (`UpstreamLimits`): a JSON body is read in pieces and
refused past its limit, one SSE event likewise, and each connection reads ahead a fixed amount,
so a stream whose client reads slowly holds its upstream back (Granian's `send` waits while the
client's socket is full; docs/faults.md).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from appliance.backends.server_state import loaded_from, loaded_paths, token_count, tokenize_request
from appliance.domain.errors import (
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    UpstreamError,
)
from appliance.domain.ports import Capabilities, UpstreamReply
from appliance.openai.sse import DEFAULT_MAX_EVENT_BYTES, DONE, EventTooLarge, SSEDecoder

_JSON = {"Content-Type": "application/json"}
_READ_PIECE = 64 * 1024  # what one read hands on: a body grows by it, the SSE decoder is fed it
_READ_AHEAD = 16 * 1024  # aiohttp's buffer per response: it stops reading the socket above twice this
_ERROR_MAX_BYTES = 64 * 1024  # an error answer: only its message is used, the rest is dropped
_PROBE_MAX_BYTES = 1 << 20  # a server's model list or token count: never more than this


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """How much of an upstream answer the gateway holds (`Settings.upstream_*`, same defaults).

    `max_body_bytes`: a JSON answer or model list (decompressed); past it, a 502.
    `max_event_bytes`: one SSE event (or line); past it the stream ends with an error frame.
    `socket_buffer_bytes`: each upstream socket's receive buffer, fixed instead of autotuned
    (up to `net.ipv4.tcp_rmem`'s maximum, 6-32 MiB): with aiohttp's read-ahead (`_READ_AHEAD`),
    what a stalled stream lets its upstream send before TCP makes it wait.
    """

    max_body_bytes: int = 32 * 1024 * 1024
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    socket_buffer_bytes: int = 256 * 1024


class HttpPool:
    """The worker's one `aiohttp.ClientSession`, opened on the running loop at start-up."""

    def __init__(self, *, max_connections: int, limits: UpstreamLimits | None = None) -> None:
        self._limit = max_connections
        self.limits = limits or UpstreamLimits()
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpPool used before start()")
        return self._session

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300, keepalive_timeout=30,
                                         socket_factory=self._socket)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                              skip_auto_headers=("User-Agent",), read_bufsize=_READ_AHEAD)

    def _socket(self, addr: aiohttp.AddrInfoType) -> socket.socket:
        family, kind, proto, _, _ = addr
        sock = socket.socket(family, kind, proto)
        # Before connect, so the window it offers (and its scale) follows from it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.limits.socket_buffer_bytes)
        return sock

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class OpenAICompatBackend:
    """One configured backend; shares the worker's `HttpPool`."""

    def __init__(self, name: str, base_url: str, pool: HttpPool, *, capabilities: Capabilities, kind: str = "openai",
                 api_key: str | None = None, headers: Mapping[str, str] | None = None, timeout_s: float = 600.0,
                 connect_timeout_s: float = 5.0) -> None:
        self.name = name
        self.kind = kind
        self._root = self.base_url_root(base_url)
        self.capabilities = capabilities
        self.base_url = base_url.rstrip("/")
        self._pool = pool
        self._headers = {**_JSON, **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        # A stream may run long; bound the wait for each read instead of the whole answer.
        self._stream_timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=timeout_s)
        self._probe_timeout = aiohttp.ClientTimeout(total=min(3.0, timeout_s), connect=min(2.0, connect_timeout_s))

    async def complete(self, payload: Mapping[str, Any]) -> UpstreamReply:
        return await self._post(payload, "/chat/completions")

    async def complete_text(self, payload: Mapping[str, Any]) -> UpstreamReply:
        return await self._post(payload, "/completions")

    async def open_stream(self, payload: Mapping[str, Any]) -> _Stream:
        return await self._open(payload, "/chat/completions")

    async def open_text_stream(self, payload: Mapping[str, Any]) -> _Stream:
        return await self._open(payload, "/completions")

    async def _post(self, payload: Mapping[str, Any], path: str) -> UpstreamReply:
        try:
            async with self._pool.session.post(f"{self.base_url}{path}", data=orjson.dumps(payload),
                                          headers=self._headers, timeout=self._timeout) as resp:
                if resp.status >= 400:
                    raise self._rejected(resp, await self._read_error(resp))
                return UpstreamReply(self._decode(await self._read_body(resp)))
        except UpstreamError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _open(self, payload: Mapping[str, Any], path: str) -> _Stream:
        try:
            resp = await self._pool.session.post(f"{self.base_url}{path}", data=orjson.dumps(payload),
                                            headers=self._headers, timeout=self._stream_timeout)
        except Exception as exc:
            raise self._translate(exc) from exc
        if resp.status >= 400:
            try:
                raw = await self._read_error(resp)
            except Exception:
                raw = b""
            finally:
                resp.release()
            raise self._rejected(resp, raw)
        return _Stream(self, resp)

    async def list_models(self) -> list[dict[str, Any]]:
        try:
            async with self._pool.session.get(f"{self.base_url}/models", headers=self._headers,
                                         timeout=self._probe_timeout) as resp:
                if resp.status >= 400:
                    raise self._rejected(resp, await self._read_error(resp))
                data = self._decode(await self._read_body(resp)).get("data")
                return list(data) if isinstance(data, list) else []
        except UpstreamError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    @staticmethod
    def base_url_root(base_url: str) -> str:
        """The server's root: the base URL without its OpenAI `/v1`."""
        url = base_url.rstrip("/")
        return url[:-3] if url.endswith("/v1") else url

    async def count_tokens(self, payload: Mapping[str, Any]) -> int | None:
        ask = tokenize_request(self.kind, str(payload.get("model", "")), payload.get("messages") or [])
        if ask is None:
            return None
        answer = await self._probe("POST", ask[0], ask[1])
        return None if answer is None else token_count(self.kind, answer)

    async def loaded_models(self) -> frozenset[str] | None:
        for path in loaded_paths(self.kind):
            answer = await self._probe("GET", path)
            loaded = None if answer is None else loaded_from(path, answer)
            if loaded is not None:
                return loaded
        return None

    async def _probe(self, method: str, path: str, body: Any = None) -> Any:
        """A small side request (a server's own API): its JSON, or None on any failure."""
        try:
            async with self._pool.session.request(
                    method, f"{self._root}{path}", data=None if body is None else orjson.dumps(body),
                    headers=self._headers, timeout=self._probe_timeout) as resp:
                if resp.status >= 400:
                    return None
                raw = b""
                while len(raw) <= _PROBE_MAX_BYTES and (part := await resp.content.read(65536)):
                    raw += part
                return None if len(raw) > _PROBE_MAX_BYTES else orjson.loads(raw)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, RuntimeError):
            return None

    async def _read_body(self, resp: aiohttp.ClientResponse, limit: int | None = None) -> bytearray:
        """The whole body, read in pieces; past `limit` (the pool's `max_body_bytes`) the
        connection is closed, not returned half-read to the pool, and the answer refused."""
        limit = self._pool.limits.max_body_bytes if limit is None else limit
        body = bytearray()
        if resp.content_length is None or resp.content_length <= limit:
            async for piece in resp.content.iter_chunked(_READ_PIECE):
                body += piece
                if len(body) > limit:
                    break
            else:
                return body
        resp.close()
        raise BackendUnavailable(f"backend {self.name} answered more than {limit} bytes "
                                 "(upstream_max_body_bytes)", backend=self.name)

    async def _read_error(self, resp: aiohttp.ClientResponse) -> bytes:
        """An error answer's body for its message: a longer one is dropped (the status stays)."""
        try:
            return bytes(await self._read_body(resp, _ERROR_MAX_BYTES))
        except BackendUnavailable:
            return b""

    def _decode(self, raw: bytes | bytearray) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BackendUnavailable(f"backend {self.name} returned invalid JSON", backend=self.name) from exc
        if not isinstance(body, dict):
            raise BackendUnavailable(f"backend {self.name} returned a non-object body", backend=self.name)
        return body

    def _rejected(self, resp: aiohttp.ClientResponse, raw: bytes) -> UpstreamError:
        status = resp.status
        retry_after = resp.headers.get("Retry-After")
        message, kind, param, code = f"backend {self.name} answered HTTP {status}", None, None, None
        try:
            err = orjson.loads(raw).get("error")
            if isinstance(err, dict):
                message = str(err.get("message") or message)
                kind, param, code = err.get("type"), err.get("param"), err.get("code")
            elif isinstance(err, str):
                message = err
        except (orjson.JSONDecodeError, AttributeError):
            pass
        if 400 <= status < 500 and status not in (401, 403, 407):
            return BackendRejected(message, status=status, backend=self.name, type=kind,
                                   param=param if isinstance(param, str) else None,
                                   code=str(code) if code is not None else None, retry_after=retry_after)
        # 5xx, and auth failures between the gateway and the backend, are the gateway's problem.
        return BackendUnavailable(f"backend {self.name}: {message}", backend=self.name, retry_after=retry_after,
                                  quoted=True)

    def _translate(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            return BackendTimeout(f"backend {self.name} did not answer in time", backend=self.name)
        return BackendUnavailable(f"backend {self.name} is unreachable: {type(exc).__name__}", backend=self.name)


class _Stream:
    """Iterates an upstream SSE body as event payloads; `aclose` drops the connection."""

    def __init__(self, backend: OpenAICompatBackend, resp: aiohttp.ClientResponse) -> None:
        self._backend = backend
        self._resp = resp
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoder = SSEDecoder(self._backend._pool.limits.max_event_bytes)
        try:
            async for chunk in self._resp.content.iter_chunked(_READ_PIECE):
                for data in decoder.feed(chunk):
                    if data == DONE:
                        self._done = True
                        return
                    yield data
            for data in decoder.close():
                if data != DONE:
                    yield data
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._backend._translate(exc) from exc
        except EventTooLarge as exc:  # aclose() then drops the connection with the rest unread
            name = self._backend.name
            raise BackendUnavailable(f"backend {name} sent a stream event of more than {exc.limit} bytes "
                                     "(upstream_max_event_bytes)", backend=name) from exc
        if not self._done:
            raise BackendUnavailable(f"backend {self._backend.name} ended the stream early", backend=self._backend.name)

    async def aclose(self) -> None:
        if self._done:
            self._resp.release()
        else:
            self._resp.close()
