"""Chat completions: resolve the model, add retrieved context, call the backend once or as a
stream, hand the client its own model name back, and record what happened."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.domain.errors import ApplianceError, DependencyUnavailable, ModelNotFound
from appliance.domain.models import ModelDirectory
from appliance.domain.ports import ChatBackend, UpstreamStream
from appliance.domain.rag import ContextProvider, inject, last_user_text
from appliance.domain.records import ChatOutcome, NullRecorder, Recorder
from appliance.domain.routing import ModelRouter, Target
from appliance.domain.tally import Tally

log = logging.getLogger(__name__)


class JsonCodec(Protocol):
    """JSON (de)serialisation, injected so the hot path can use a fast library."""

    def loads(self, data: bytes) -> Any:
        ...

    def dumps(self, value: Any) -> bytes:
        ...


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request; `body` is the client's JSON, passed through upstream."""

    body: dict[str, Any]
    model: str
    stream: bool
    correlation_id: str
    workspace: str | None = None
    rag_top_k: int | None = None
    received_at: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class ChatPlan:
    target: Target
    payload: dict[str, Any]
    route: str = "direct"
    sources: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    wants_usage: bool = False


@dataclass(slots=True)
class ChatReply:
    body: dict[str, Any]
    plan: ChatPlan
    upstream_ms: float


class ChatService:
    """Orchestrates one chat completion; see the module docstring."""

    def __init__(
        self,
        router: ModelRouter,
        backends: Mapping[str, ChatBackend],
        directory: ModelDirectory,
        codec: JsonCodec,
        *,
        recorder: Recorder | None = None,
        context: ContextProvider | None = None,
        default_top_k: int = 5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._router = router
        self._backends = backends
        self._directory = directory
        self._codec = codec
        self.recorder: Recorder = recorder or NullRecorder()
        self.context = context
        self._top_k = default_top_k
        self._clock = clock

    async def target(self, model: str) -> Target:
        """Resolve `model`; an unknown name triggers one discovery refresh before 404."""
        found = self._router.find(model)
        if found is None:
            await self._directory.refresh()
            found = self._router.find(model)
        if found is None or found.backend not in self._backends:
            raise ModelNotFound(model)
        return found

    async def plan(self, req: ChatRequest) -> ChatPlan:
        target = await self.target(req.model)
        payload = req.body if not target.renamed else {**req.body, "model": target.upstream_model}
        plan = ChatPlan(target, payload)
        if req.stream:
            options = payload.get("stream_options")
            plan.wants_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            if not plan.wants_usage:
                # Ask for usage anyway so telemetry has token counts; the extra chunk is not relayed.
                plan.payload = {**payload, "stream_options": {**(options or {}), "include_usage": True}}
        if req.workspace:
            await self._add_context(req, plan)
        return plan

    async def _add_context(self, req: ChatRequest, plan: ChatPlan) -> None:
        if self.context is None:
            plan.warnings.append("knowledge is not configured; answered without retrieval")
            return
        query = last_user_text(req.body.get("messages") or [])
        try:
            ctx = await self.context.context_for(req.workspace or "", query, req.rag_top_k or self._top_k, req.correlation_id)
        except DependencyUnavailable as exc:
            log.warning("retrieval unavailable, answering direct", extra={"workspace": req.workspace, "error": exc.message})
            plan.warnings.append(f"retrieval unavailable ({exc.message}); answered without retrieval")
            return
        plan.route = "rag"
        plan.sources = ctx.sources
        plan.payload = {**plan.payload, "messages": inject(plan.payload.get("messages") or [], ctx)}

    async def complete(self, req: ChatRequest, plan: ChatPlan) -> ChatReply:
        backend = self._backends[plan.target.backend]
        started = self._clock()
        tally = Tally()
        status, error = 200, None
        try:
            reply = await backend.complete(plan.payload)
            body = reply.body
            tally.add_body(body)
            body["model"] = req.model
            if plan.route == "rag":
                body["appliance"] = {"route": plan.route, "sources": list(plan.sources)}
            return ChatReply(body, plan, (self._clock() - started) * 1000)
        except ApplianceError as exc:
            status, error = exc.status, exc.message
            raise
        finally:
            self._record(req, plan, tally, started, status, error, streaming=False)

    async def open_stream(self, req: ChatRequest, plan: ChatPlan) -> tuple[AsyncIterator[bytes], float]:
        """Open the upstream stream; returns the client-bound payload iterator and the time the
        backend took to answer. Errors before the first byte raise here."""
        upstream, started = await self._open(req, plan)
        return self._relay(req, plan, upstream, started), (self._clock() - started) * 1000

    async def open_chunks(self, req: ChatRequest, plan: ChatPlan) -> tuple[AsyncIterator[dict[str, Any]], float]:
        """Like `open_stream`, for a responder that re-encodes the answer in another protocol
        (Anthropic, Ollama): yields every upstream `chat.completion.chunk` decoded, the usage
        chunk included and model names untouched. Recorded like `open_stream`."""
        upstream, started = await self._open(req, plan)
        return self._decoded(req, plan, upstream, started), (self._clock() - started) * 1000

    async def _open(self, req: ChatRequest, plan: ChatPlan) -> tuple[UpstreamStream, float]:
        backend = self._backends[plan.target.backend]
        started = self._clock()
        try:
            return await backend.open_stream(plan.payload), started
        except ApplianceError as exc:
            self._record(req, plan, Tally(), started, exc.status, exc.message, streaming=True)
            raise

    async def _relay(self, req: ChatRequest, plan: ChatPlan, upstream: UpstreamStream, started: float) -> AsyncIterator[bytes]:
        tally = Tally()
        loads, dumps = self._codec.loads, self._codec.dumps
        status, error = 200, None
        try:
            async for data in upstream:
                try:
                    chunk = loads(data)
                except ValueError:
                    yield data
                    continue
                if not isinstance(chunk, dict):
                    yield data
                    continue
                tally.add_chunk(chunk, self._clock())
                if not plan.wants_usage and "usage" in chunk:
                    if not chunk.get("choices"):
                        continue
                    del chunk["usage"]
                    chunk["model"] = req.model
                    yield dumps(chunk)
                elif plan.target.renamed:
                    chunk["model"] = req.model
                    yield dumps(chunk)
                else:
                    yield data
        except ApplianceError as exc:
            status, error = exc.status, exc.message
            raise
        except BaseException:
            status, error = 499, "client disconnected"
            raise
        finally:
            await upstream.aclose()
            self._record(req, plan, tally, started, status, error, streaming=True)

    async def _decoded(self, req: ChatRequest, plan: ChatPlan, upstream: UpstreamStream,
                       started: float) -> AsyncIterator[dict[str, Any]]:
        tally = Tally()
        loads = self._codec.loads
        status, error = 200, None
        try:
            async for data in upstream:
                try:
                    chunk = loads(data)
                except ValueError:
                    log.debug("skipping an upstream event that is not JSON", extra={"backend": plan.target.backend})
                    continue
                if isinstance(chunk, dict):
                    tally.add_chunk(chunk, self._clock())
                    yield chunk
        except ApplianceError as exc:
            status, error = exc.status, exc.message
            raise
        except BaseException:
            status, error = 499, "client disconnected"
            raise
        finally:
            await upstream.aclose()
            self._record(req, plan, tally, started, status, error, streaming=True)

    def _record(self, req: ChatRequest, plan: ChatPlan, tally: Tally, started: float, status: int,
                error: str | None, *, streaming: bool) -> None:
        now = self._clock()
        entry = plan.target.entry
        usage = tally.usage
        try:
            self.recorder.chat(ChatOutcome(
                correlation_id=req.correlation_id,
                model=req.model,
                upstream_model=plan.target.upstream_model,
                backend=plan.target.backend,
                route=plan.route,
                streaming=streaming,
                messages=plan.payload.get("messages") or (),
                response_text=tally.text,
                finish_reason=tally.finish_reason,
                usage=usage,
                tool_calls=tally.tool_calls,
                latency_ms=(now - req.received_at) * 1000,
                ttft_ms=(tally.first_token_at - req.received_at) * 1000 if tally.first_token_at else None,
                cost_usd=entry.cost(usage.prompt_tokens, usage.completion_tokens) if entry else 0.0,
                status=status,
                error=error,
                workspace=req.workspace,
                sources=plan.sources,
                started_at=time.time() - (now - req.received_at),
            ))
        except Exception:  # recording must never break a response
            log.exception("recording the chat outcome failed")
