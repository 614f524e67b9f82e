"""The ASGI entry point for Granian (`appliance.asgi:create`, factory mode): one app per worker.

Only Granian workers import this module. Its first act holds stop signals (see
`appliance.signals`): the imports below take most of a worker's start-up, and a SIGTERM
arriving then would otherwise be lost.
"""

from __future__ import annotations

from appliance import signals

signals.hold()

from appliance import logs  # noqa: E402 - after the signal hold, on purpose
from appliance.api.asgi_scope import ReceiveInScope  # noqa: E402
from appliance.app import create_app  # noqa: E402
from appliance.config import load_settings  # noqa: E402
from appliance.services import build_services  # noqa: E402


def create() -> ReceiveInScope:
    settings = load_settings()
    logs.configure(settings.log_level)
    return create_app(settings, build_services(settings))
