"""Chat completions: resolve the model, fit the request to its backend, add retrieved context,
call the backend once or as a stream, hand the client its own model name back, and record
what happened (once per request, however it ended: `chat_record.py`). The request and plan
types are in `chat_request.py`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from appliance.domain.attempts import Answered, Walk
from appliance.domain.chat_record import ChatRecording
from appliance.domain.chat_request import (
    ChatPlan,
    ChatReply,
    ChatRequest,
    passages_json,
    prompt_json,
)
from appliance.domain.chat_stream import ChatStream, End
from appliance.domain.chunk_shape import body_problem, chunk_problem
from appliance.domain.errors import (
    ApplianceError,
    BackendUnavailable,
    DependencyUnavailable,
    InvalidRequest,
    ModelNotFound,
    UpstreamError,
)
from appliance.domain.legacy_text import LegacyText, takes_text
from appliance.domain.messages import last_user_text
from appliance.domain.models import ModelDirectory
from appliance.domain.parsers.chain import StreamChain
from appliance.domain.parsers.output_format import answer_problem, answer_text, retry_messages
from appliance.domain.parsers.policy import Parsers
from appliance.domain.parsers.stages import OUTPUT_FORMAT
from appliance.domain.ports import ChatBackend, UpstreamStream
from appliance.domain.rag import ContextProvider, inject
from appliance.domain.records import NullRecorder, Recorder
from appliance.domain.routing import ModelRouter, Target
from appliance.domain.semantic_router import Decision, SemanticRouter
from appliance.domain.tally import Tally
from appliance.domain.tracing import NO_TRACER, Tracer
from appliance.domain.upstreams import Upstreams

log = logging.getLogger(__name__)


class JsonCodec(Protocol):
    """JSON (de)serialisation, injected so the hot path can use a fast library."""

    def loads(self, data: bytes) -> Any:
        ...

    def dumps(self, value: Any) -> bytes:
        ...


class InputModeration(Protocol):
    """Screens a request's input with a guard model before any other model sees it, for the
    models and routers that ask for it (domain/moderation.py); raises `ContentFiltered`."""

    def applies(self, names: Collection[str]) -> bool:
        ...

    async def screen(self, conversations: Sequence[Sequence[Mapping[str, Any]]], correlation_id: str) -> None:
        ...


class ChatService:
    """Orchestrates one chat completion; see the module docstring.

    `status_of` classifies a failure as the status its outcome records (the transport's
    error table: the domain knows what failed, not how that reads in HTTP).
    """

    def __init__(
        self,
        router: ModelRouter,
        backends: Mapping[str, ChatBackend],
        directory: ModelDirectory,
        codec: JsonCodec,
        *,
        status_of: Callable[[BaseException], int],
        upstreams: Upstreams | None = None,
        recorder: Recorder | None = None,
        context: ContextProvider | None = None,
        default_top_k: int = 5,
        bytes_per_token: float = 2.5,
        routers: Mapping[str, SemanticRouter] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        parsers: Parsers | None = None,
        tracer: Tracer = NO_TRACER,
        moderation: InputModeration | None = None,
    ) -> None:
        self._tracer = tracer
        self._recording = ChatRecording(backends, recorder or NullRecorder(), tracer, clock)
        self._moderation = moderation
        self._router = router
        self._parsers = parsers
        self._backends = backends
        self._directory = directory
        self._codec = codec
        self._status_of = status_of
        self.upstreams = upstreams or Upstreams(backends)
        self._walk = Walk(backends, self.upstreams, dumps=codec.dumps, bytes_per_token=bytes_per_token, clock=clock)
        self._context = context
        self._top_k = default_top_k
        self._routers = dict(routers or {})
        self._clock = clock

    async def target(self, model: str) -> Target:
        """Resolve `model` (a router: its default); an unknown name triggers one discovery
        refresh before 404."""
        router = self._routers.get(model)
        if router is not None:
            model = router.default
        found = self._router.find(model)
        if found is None:
            await self._directory.refresh()
            found = self._router.find(model)
        if found is None or found.backend not in self._backends:
            raise ModelNotFound(model)
        return found

    def _chain(self, target: Target) -> tuple[Target, ...]:
        if target.entry is None or not target.entry.fallbacks:
            return (target,)
        chain = [target]
        for name in target.entry.fallbacks:
            found = self._router.find(name)
            if found is not None and found.backend in self._backends:
                chain.append(Target(target.requested, found.backend, found.upstream_model, found.entry))
        return tuple(chain)

    async def plan(self, req: ChatRequest) -> ChatPlan:
        router = self._routers.get(req.model)
        routing: dict[str, Any] = {}
        if router is None:
            target = await self.target(req.model)
        else:
            decision = await self._route(router, req)
            chosen = await self.target(decision.model)
            target = Target(req.model, chosen.backend, chosen.upstream_model, chosen.entry)
            routing = {"router": router.id, "selected": decision.model, "reason": decision.reason,
                       "defaulted": decision.defaulted, "decision_ms": round(decision.elapsed_ms, 3)}
        payload = req.body
        plan = ChatPlan(target, payload, chain=self._chain(target), backend=target.backend, routing=routing)
        if self._moderation is not None and self._moderation.applies({req.model, *(t.model_id for t in plan.chain)}):
            await self._moderation.screen(_screened(req), req.correlation_id)
        if req.stream:
            options = payload.get("stream_options")
            plan.wants_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            if not plan.wants_usage:
                # Ask for usage anyway so telemetry has token counts; the extra chunk is not relayed.
                plan.payload = {**payload, "stream_options": {**(options or {}), "include_usage": True}}
        if req.workspace:
            await self._add_context(req, plan)
        if self._parsers is not None and self._parsers.may_inline(plan.chain):
            plan.payload = await self._parsers.inline(plan.chain, plan.payload)
        return plan

    async def _route(self, router: SemanticRouter, req: ChatRequest) -> Decision:
        """The router's choice for this prompt (it never raises: on trouble, its default)."""
        messages = req.body.get("messages") or []
        latency = self.upstreams.latency_ms()
        by_model = {c.id: latency[b] for c in router.cards
                    if (t := self._router.find(c.id)) is not None and (b := t.backend) in latency}
        with self._tracer.span("route", {"appliance.router": router.id}) as span:
            decision = await router.choose(last_user_text(messages), prompt_tokens=self._walk.estimate(req.body),
                                           latency_ms=by_model)
            span.set("appliance.route.selected", decision.model)
            span.set("appliance.route.reason", decision.reason)
            span.set("appliance.route.defaulted", decision.defaulted)
        log.info("routed", extra={"router": router.id, "selected": decision.model, "reason": decision.reason,
                                  "defaulted": decision.defaulted, "decision_ms": round(decision.elapsed_ms, 3)})
        return decision

    async def _add_context(self, req: ChatRequest, plan: ChatPlan) -> None:
        if self._context is None:
            plan.warnings.append("knowledge is not configured; answered without retrieval")
            return
        query = last_user_text(req.body.get("messages") or [])
        try:
            with self._tracer.span("retrieve", {"appliance.workspace": req.workspace}) as span:
                ctx = await self._context.context_for(req.workspace or "", query, req.rag_top_k or self._top_k,
                                                      req.correlation_id, prompt=req.prompt)
                span.set("appliance.retrieve.sources", len(ctx.sources))
        except DependencyUnavailable as exc:
            log.warning("retrieval unavailable, answering direct", extra={"workspace": req.workspace, "error": exc.message})
            plan.warnings.append(f"retrieval unavailable ({exc.message}); answered without retrieval")
            return
        plan.route = "rag"
        plan.sources = ctx.sources
        plan.passages = ctx.passages
        plan.prompt = ctx.prompt
        plan.payload = {**plan.payload, "messages": inject(plan.payload.get("messages") or [], ctx)}

    async def complete(self, req: ChatRequest, plan: ChatPlan) -> ChatReply:
        started = self._clock()
        tally = Tally()
        status, error = 200, None

        async def call(backend: ChatBackend, payload: dict[str, Any]) -> dict[str, Any]:
            if takes_text(req.text, backend):
                assert req.text is not None
                body = (await backend.complete_text(req.text.payload(payload, stream=False))).body
            else:
                if req.text is not None:
                    req.text.refuse_chat(backend)
                body = (await backend.complete(payload)).body
            problem = body_problem(body)
            if problem:
                raise BackendUnavailable(f"backend {backend.name} sent a malformed answer: {problem}",
                                         backend=backend.name)
            return body

        try:
            body, answered = await self._walk.run(plan.chain, plan.payload, req.extensions, call)
            self.upstreams.done(answered.backend)
            self._answered(plan, answered, req.text)
            if self._parsers is not None and not plan.text_answer:
                body = await self._parsed_body(req, plan, body, call)
            tally.add_body(body)
            body["model"] = req.model
            if plan.route == "rag":
                body["appliance"] = {"route": plan.route, "sources": list(plan.sources),
                                     "passages": passages_json(plan.passages), "prompt": prompt_json(plan.prompt)}
            return ChatReply(body, (self._clock() - started) * 1000)
        except BaseException as exc:
            status, error = self._failed(exc)
            raise
        finally:
            self._recording.record(req, plan, tally, started, status, error, streaming=False)

    async def open_stream(self, req: ChatRequest, plan: ChatPlan) -> ChatStream[bytes]:
        """Open the upstream stream for an OpenAI client: each event's payload, passed through
        untouched where nothing needs changing. Errors before the first byte raise here."""
        upstream, started = await self._open(req, plan)
        tally = Tally()
        chain = self._parsers.stream(plan.target, req.body) if self._parsers is not None else None
        if chain is not None:
            return ChatStream(lambda end: self._parsed(req, plan, upstream, tally, end, chain, encode=True),
                              (self._clock() - started) * 1000, self._ender(req, plan, upstream, tally, started))
        return ChatStream(lambda end: self._passthrough(req, plan, upstream, tally, end),
                          (self._clock() - started) * 1000, self._ender(req, plan, upstream, tally, started))

    async def open_chunks(self, req: ChatRequest, plan: ChatPlan) -> ChatStream[dict[str, Any]]:
        """Like `open_stream`, for a responder that re-encodes the answer in another protocol
        (Anthropic, Ollama): every upstream `chat.completion.chunk` decoded, the usage chunk
        included and model names untouched."""
        upstream, started = await self._open(req, plan)
        tally = Tally()
        chain = self._parsers.stream(plan.target, req.body) if self._parsers is not None and not plan.text_answer \
            else None
        if chain is not None:
            return ChatStream(lambda end: self._parsed(req, plan, upstream, tally, end, chain, encode=False),
                              (self._clock() - started) * 1000, self._ender(req, plan, upstream, tally, started))
        return ChatStream(lambda end: self._decoded(plan, upstream, tally, end),
                          (self._clock() - started) * 1000, self._ender(req, plan, upstream, tally, started))

    async def _open(self, req: ChatRequest, plan: ChatPlan) -> tuple[UpstreamStream, float]:
        started = self._clock()

        async def call(backend: ChatBackend, payload: dict[str, Any]) -> UpstreamStream:
            if takes_text(req.text, backend):
                assert req.text is not None
                return await backend.open_text_stream(req.text.payload(payload, stream=True))
            if req.text is not None:
                req.text.refuse_chat(backend)
            return await backend.open_stream(payload)

        try:
            upstream, answered = await self._walk.run(plan.chain, plan.payload, req.extensions, call)
        except BaseException as exc:
            self._recording.record(req, plan, Tally(), started, *self._failed(exc), streaming=True)
            raise
        self._answered(plan, answered, req.text)
        return upstream, started

    def _answered(self, plan: ChatPlan, answered: Answered, text: LegacyText | None = None) -> None:
        if answered.target.entry is not plan.target.entry:
            plan.fallback_from = plan.target.model_id
            plan.warnings.append(f"{plan.target.model_id} failed; answered by {answered.target.model_id}")
        plan.target = answered.target
        plan.backend = answered.backend
        plan.payload = answered.payload
        plan.text_answer = takes_text(text, self._backends[answered.backend])
        plan.upstream_began = self._clock() - answered.ttfb_ms / 1000

    def _failed(self, exc: BaseException) -> tuple[int, str]:
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return 499, "client disconnected"
        if isinstance(exc, ApplianceError):
            return self._status_of(exc), exc.message
        return self._status_of(exc), f"internal error: {type(exc).__name__}"

    def _ender(self, req: ChatRequest, plan: ChatPlan, upstream: UpstreamStream, tally: Tally,
               started: float) -> Callable[[int, str | None], Awaitable[None]]:
        async def end(status: int, error: str | None) -> None:
            try:
                await upstream.aclose()
            finally:
                self.upstreams.done(plan.backend)
                self._recording.record(req, plan, tally, started, status, error, streaming=True)
        return end

    async def _passthrough(self, req: ChatRequest, plan: ChatPlan, upstream: UpstreamStream,
                           tally: Tally, end: End) -> AsyncIterator[bytes]:
        dumps = self._codec.dumps
        async for data in upstream:
            chunk = self._readable(data, plan, tally)
            if chunk is None:
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
        await end(200, None)  # whole: recorded before `[DONE]` goes out

    async def _decoded(self, plan: ChatPlan, upstream: UpstreamStream, tally: Tally,
                       end: End) -> AsyncIterator[dict[str, Any]]:
        async for data in upstream:
            chunk = self._readable(data, plan, tally)
            if chunk is not None:
                tally.add_chunk(chunk, self._clock())
                yield chunk
        await end(200, None)  # whole: recorded before the dialect's closing frame goes out

    async def _parsed(self, req: ChatRequest, plan: ChatPlan, upstream: UpstreamStream, tally: Tally, end: End,
                      chain: StreamChain, *, encode: bool) -> AsyncIterator[Any]:
        """`_passthrough` (`encode`: payload bytes) or `_decoded` (chunks), through the parser
        chain (domain/parsers): a chunk it left alone goes out as the backend's bytes."""
        dumps = self._codec.dumps
        async for data in upstream:
            chunk = self._readable(data, plan, tally)
            if chunk is None:
                continue
            out = chain.feed(chunk)
            if out is None:
                continue
            tally.add_chunk(out, self._clock())
            if not encode:
                yield out
            elif not plan.wants_usage and "usage" in out:
                if not out.get("choices"):
                    continue
                out = {k: v for k, v in out.items() if k != "usage"}
                out["model"] = req.model
                yield dumps(out)
            elif out is not chunk or plan.target.renamed:
                out["model"] = req.model
                yield dumps(out)
            else:
                yield data
        last = chain.finish()
        if last is not None:
            tally.add_chunk(last, self._clock())
            if encode:
                last["model"] = req.model
            yield dumps(last) if encode else last
        if chain.schema is not None and not tally.tool_calls:
            self._check_streamed(plan, tally.text, chain.schema)
        await end(200, None)  # whole: recorded before the closing frame goes out

    def _check_streamed(self, plan: ChatPlan, text: str, schema: Mapping[str, Any]) -> None:
        """A streamed strict json_schema answer cannot be asked again once it is out: checked,
        counted and logged only."""
        assert self._parsers is not None
        problem = answer_problem(text, schema)
        self._parsers.count(OUTPUT_FORMAT, "valid" if problem is None else "invalid_streamed")
        if problem is not None:
            log.warning("a streamed answer does not match its strict json_schema",
                        extra={"backend": plan.backend, "at": problem.split(":", 1)[0]})

    async def _parsed_body(self, req: ChatRequest, plan: ChatPlan, body: dict[str, Any],
                           call: Callable[[ChatBackend, dict[str, Any]], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The parser chain over a whole answer; a strict json_schema answer that does not
        validate is asked again (`schema_retries` times), then returned with `schema_warning`."""
        parsers = self._parsers
        assert parsers is not None
        parsers.body(plan.target, req.body, body)
        schema = parsers.schema(plan.target, req.body)
        if schema is None:
            return body
        retries = parsers.settings.schema_retries
        problem = ""
        for attempt in range(retries + 1):
            text = answer_text(body)
            if text is None:
                return body
            found = answer_problem(text, schema)
            if found is None:
                parsers.count(OUTPUT_FORMAT, "valid")
                return body
            problem = found
            if attempt == retries:
                break
            parsers.count(OUTPUT_FORMAT, "retried")
            log.info("an answer does not match its strict json_schema; asking again",
                     extra={"backend": plan.backend, "at": problem.split(":", 1)[0]})
            messages = list(plan.payload.get("messages") or [])
            payload = {**plan.payload, "messages": retry_messages(messages, text, problem)}
            try:
                again, answered = await self._walk.run(plan.chain, payload, req.extensions, call)
            except UpstreamError as exc:  # the answer there is beats none: returned, with the warning
                log.warning("asking again for a strict json_schema answer failed",
                            extra={"backend": plan.backend, "error": type(exc).__name__})
                break
            self.upstreams.done(answered.backend)
            plan.backend = answered.backend
            parsers.body(plan.target, req.body, again)
            body = again
        parsers.count(OUTPUT_FORMAT, "invalid_returned")
        log.warning("an answer does not match its strict json_schema after retries; returned with a warning",
                    extra={"backend": plan.backend, "at": problem.split(":", 1)[0]})
        plan.schema_warning = problem
        return body

    def _readable(self, data: bytes, plan: ChatPlan, tally: Tally) -> dict[str, Any] | None:
        """The event decoded, or None (skipped and counted) when it is not a readable chunk:
        not JSON, not an object, or a field the gateway reads has the wrong shape."""
        problem: str | None
        try:
            chunk = self._codec.loads(data)
        except ValueError:
            problem = "not JSON"
        else:
            if isinstance(chunk, dict):
                problem = chunk_problem(chunk)
                if problem is None:
                    return chunk
            else:
                problem = "not a JSON object"
        tally.skipped += 1
        log.debug("skipped an unreadable upstream stream event", extra={"backend": plan.backend,
                                                                        "problem": problem})
        return None


def _screened(req: ChatRequest) -> list[list[Mapping[str, Any]]]:
    """What input moderation reads: the conversation, or each legacy prompt on its own."""
    if req.text is None:
        return [list(req.body.get("messages") or [])]
    if req.text.chat_refusal is not None:
        raise InvalidRequest("token-id prompts cannot be moderated; this model screens its input", param="prompt")
    return [[{"role": "user", "content": p}] for p in req.text.prompts]
