"""What one chat leaves behind, once however it ended: its outcome for the recorders
(events, metrics, the access settlement), with its cost and GPU-seconds, and the upstream
call's span when tracing is on. A failure here is logged, never the response's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from appliance.domain.chat_request import ChatPlan, ChatRequest, prompt_json
from appliance.domain.ports import Capabilities, ChatBackend
from appliance.domain.records import ChatOutcome, Recorder, Usage
from appliance.domain.tally import Tally
from appliance.domain.tracing import Tracer

log = logging.getLogger(__name__)


class ChatRecording:
    """Records chat outcomes for `ChatService` (see the module docstring)."""

    def __init__(self, backends: Mapping[str, ChatBackend], recorder: Recorder, tracer: Tracer,
                 clock: Callable[[], float]) -> None:
        self._backends = backends
        self._recorder = recorder
        self._tracer = tracer
        self._clock = clock

    def record(self, req: ChatRequest, plan: ChatPlan, tally: Tally, started: float, status: int,
               error: str | None, *, streaming: bool) -> None:
        """The outcome, once per request however it ended (`started`: the clock time the
        gateway began on it), and the upstream span when tracing is on."""
        now = self._clock()
        usage = tally.usage
        try:
            backend = self._backends.get(plan.backend)
            capabilities = backend.capabilities if backend is not None else None
            gpu_seconds = self._gpu_seconds(plan, capabilities, now)
            self._recorder.chat(ChatOutcome(
                correlation_id=req.correlation_id,
                model=req.model,
                upstream_model=plan.target.upstream_model,
                backend=plan.backend,
                route=plan.route,
                streaming=streaming,
                messages=plan.payload.get("messages") or (),
                response_text=tally.text,
                finish_reason=tally.finish_reason,
                usage=usage,
                tool_calls=tally.tool_calls,
                latency_ms=(now - req.received_at) * 1000,
                ttft_ms=(tally.first_token_at - req.received_at) * 1000 if tally.first_token_at else None,
                cost_usd=self._cost(plan, capabilities, usage, gpu_seconds),
                status=status,
                error=error,
                workspace=req.workspace,
                sources=plan.sources,
                started_at=time.time() - (now - req.received_at),
                malformed_events=tally.skipped,
                routing=self._routing(plan),
                gpu_seconds=gpu_seconds,
                key=req.key,
                prompt=prompt_json(plan.prompt),
            ))
            if self._tracer.enabled:
                self._trace_upstream(req, plan, capabilities, tally, status, error, now, started)
        except Exception:  # recording must never break a response
            log.exception("recording the chat outcome failed")

    @staticmethod
    def _routing(plan: ChatPlan) -> dict[str, Any]:
        if not plan.routing and plan.fallback_from is None:
            return {}
        out = dict(plan.routing)
        if plan.fallback_from is not None:
            out["fallback"] = {"from": plan.fallback_from, "to": plan.target.model_id}
        return out

    def _trace_upstream(self, req: ChatRequest, plan: ChatPlan, capabilities: Capabilities | None, tally: Tally,
                        status: int, error: str | None, now: float, started: float) -> None:
        """The upstream call's span, made when its outcome is known (as a child of the request's
        span, with the times it had): from the answering backend's call, or from the first try
        when none answered, to the end of the answer."""
        wall = time.time()
        began = plan.upstream_began if plan.upstream_began is not None else started
        usage = tally.usage
        first = tally.first_token_at
        span = self._tracer.start(f"chat {req.model}", {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": capabilities.provider if capabilities is not None else None,
            "gen_ai.request.model": req.model,
            "gen_ai.response.model": plan.target.upstream_model,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.response.finish_reasons": tally.finish_reason,
            "appliance.backend": plan.backend, "appliance.route": plan.route,
            "appliance.streaming": req.stream, "appliance.status": status,
            "appliance.ttft_ms": round((first - req.received_at) * 1000, 3) if first else None,
            "gen_ai.server.time_to_first_token": round(first - began, 6) if first else None,
        }, start_time=wall - (now - began), client=True)
        if error is not None:
            span.fail(error, str(status))
        span.end(wall)

    @staticmethod
    def _gpu_seconds(plan: ChatPlan, capabilities: Capabilities | None, now: float) -> float:
        """The answering backend's time on this request, when it is a local server."""
        if plan.upstream_began is None or capabilities is None or not capabilities.local:
            return 0.0
        return round(max(now - plan.upstream_began, 0.0), 6)

    @staticmethod
    def _cost(plan: ChatPlan, capabilities: Capabilities | None, usage: Usage, gpu_seconds: float) -> float:
        """What a chat cost: the catalog's token prices for a priced model, else the answering
        backend's GPU-seconds at its `gpu_hour_usd` (0 without one). Budgets, usage rows and
        the cost metrics all read this one number."""
        entry = plan.target.entry
        cost = entry.cost(usage.prompt_tokens, usage.completion_tokens) if entry else 0.0
        if cost or not gpu_seconds:
            return cost
        price = capabilities.gpu_hour_usd if capabilities is not None else 0.0
        return gpu_seconds * price / 3600 if price else 0.0
