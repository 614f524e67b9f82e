"""The ASGI entry point for Granian (`appliance.asgi:create`, factory mode): one app per worker."""

from __future__ import annotations

from appliance import logs
from appliance.api.asgi_scope import ReceiveInScope
from appliance.app import create_app
from appliance.config import load_settings
from appliance.services import build_services


def create() -> ReceiveInScope:
    settings = load_settings()
    logs.configure(settings.log_level)
    return create_app(settings, build_services(settings))
