"""The Falcon ASGI application: `create_app(settings, services)`; no work at import time.

This is the route table: each feature's endpoints, and the service (built in
`appliance.services`) they call.
"""

from __future__ import annotations

import falcon
import falcon.asgi
import falcon.media
import orjson

from appliance.api import admin_keys, embeddings, errors, knowledge, ollama, ui
from appliance.api.access import AccessGuard
from appliance.api.asgi_scope import ReceiveInScope
from appliance.api.body import BodyLimits
from appliance.api.chat import ChatCompletions
from appliance.api.completions import Completions
from appliance.api.count_tokens import CountTokens
from appliance.api.health import HealthResource, ReadyResource
from appliance.api.lifecycle import Lifecycle
from appliance.api.messages import Messages
from appliance.api.metrics import MetricsResource
from appliance.api.middleware import RequestContext
from appliance.api.models import ModelsResource
from appliance.api.moderations import Moderations
from appliance.api.responses import Responses
from appliance.api.usage import UsageResource
from appliance.config import Settings
from appliance.services import Services


def create_app(settings: Settings, services: Services) -> ReceiveInScope:
    context = RequestContext(body_limits=BodyLimits(settings.max_body_bytes, settings.body_read_timeout_s),
                             keys_required=lambda: services.access.required,
                             access_log=settings.access_log, allowed_hosts=settings.allowed_hosts,
                             tracer=services.tracer)
    lifecycle = Lifecycle(services.start, services.aclose, context, drain_timeout_s=settings.drain_timeout_s,
                          announce={"host": settings.host, "port": settings.port, "backends": len(services.backends)})
    app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response] = falcon.asgi.App(
        middleware=[lifecycle, context, AccessGuard(services.access)])
    app.req_options.strip_url_path_trailing_slash = True
    json_handler = falcon.media.JSONHandler(dumps=lambda o: orjson.dumps(o).decode(), loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    errors.install(app)

    finish = context.finish
    app.add_route("/v1/chat/completions", ChatCompletions(services.chat, finish=finish))
    app.add_route("/v1/messages", Messages(services.chat, finish=finish))
    app.add_route("/v1/completions", Completions(services.chat, finish=finish))
    if services.tokens is not None:
        app.add_route("/v1/messages/count_tokens", CountTokens(services.tokens))
    guard = settings.catalog.moderations
    app.add_route("/v1/moderations", Moderations(services.moderation, max_inputs=guard.max_inputs if guard else 32))
    responses = Responses(services.chat, services.responses, finish=finish)
    app.add_route("/v1/responses", responses)
    app.add_route("/v1/responses/{response_id}", responses, suffix="one")
    app.add_route("/v1/responses/{response_id}/input_items", responses, suffix="items")
    models = ModelsResource(services.directory)
    app.add_route("/v1/models", models)
    app.add_route("/v1/models/{model_id:path}", models, suffix="one")
    cfg = settings.knowledge
    embeddings.add_routes(app, services.embeddings, max_inputs=cfg.embed_max_inputs,
                          max_documents=cfg.rerank_max_documents)
    knowledge.add_routes(app, services.knowledge)
    ollama.add_routes(app, services.chat, services.directory, services.router, services.embeddings,
                      max_inputs=cfg.embed_max_inputs, finish=finish)
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(services.backends, services.readiness,
                                           breakers=services.chat.upstreams.states))
    app.add_route("/metrics", MetricsResource(services.collectors))
    app.add_route("/admin/usage", UsageResource(services.usage))
    admin_keys.add_routes(app, services.key_admin)
    ui.add_routes(app, services.activity)
    return ReceiveInScope(app)
