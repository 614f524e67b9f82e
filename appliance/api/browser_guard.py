"""What a web page on another site could make a browser send, refused.

Two attacks reach a gateway that has no API keys from any page its user opens:

- A "simple" cross-site POST (text/plain, a form) needs no CORS preflight, so a page can
  plant a document or spend tokens. JSON endpoints therefore take only a JSON body (or
  none declared); a form-encoded body is allowed only without the headers every browser
  adds (`Origin`, `Sec-Fetch-Site`), so `curl -d` keeps working (415 otherwise).
- DNS rebinding points a name the attacker owns at 127.0.0.1, and the page then talks to
  a loopback gateway as its own origin. Its requests carry the attacker's name in `Host`.
  With no keys configured, `Host` must be an IP literal, `localhost`, this machine's name,
  or one of `allowed_hosts` (403 otherwise). With keys, a page cannot send the key.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Final

import falcon.asgi

from appliance.domain.errors import Forbidden, UnsupportedMediaType

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_FORM: Final = "application/x-www-form-urlencoded"
_CACHE_MAX: Final = 256


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _hostname(host: str) -> str:
    """`Host` without its port (IPv6 literals keep their brackets' content)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def machine_names() -> set[str]:
    """This machine's name and its mDNS name (no DNS lookup: a start-up must not hang on it)."""
    name = socket.gethostname().lower()
    return {name, f"{name}.local"} if "." not in name else {name}


class BrowserGuard:
    def __init__(self, *, check_host: bool, allowed_hosts: Iterable[str] = ()) -> None:
        self._check_host = check_host
        self._allowed = {h.lower() for h in allowed_hosts} | machine_names()
        self._verdicts: dict[str, bool] = {}

    def check(self, req: falcon.asgi.Request, check_host: bool | None = None) -> None:
        """`check_host` overrides the constructor's (keys can appear and go while serving)."""
        if self._check_host if check_host is None else check_host:
            self._host(req.get_header("Host") or "")
        if req.method in _BODY_METHODS:
            self._content_type(req)

    def _host(self, host: str) -> None:
        ok = self._verdicts.get(host)
        if ok is None:
            name = _hostname(host)
            ok = (not name or _is_ip(name) or name == "localhost" or name.endswith(".localhost")
                  or name in self._allowed)
            if len(self._verdicts) >= _CACHE_MAX:
                self._verdicts.clear()
            self._verdicts[host] = ok
        if not ok:
            raise Forbidden(f"Host '{_hostname(host)}' is not one this gateway answers without API keys; "
                            "add it to APPLIANCE_ALLOWED_HOSTS or configure API keys", param="Host")

    def _content_type(self, req: falcon.asgi.Request) -> None:
        declared = req.content_type
        if declared is None:
            return
        media = _media_type(declared)
        if _is_json(media):
            return
        if media == _FORM and req.get_header("Origin") is None and req.get_header("Sec-Fetch-Site") is None:
            return  # curl -d: not a browser
        raise UnsupportedMediaType(f"Content-Type '{media}' is not accepted: send the body as application/json",
                                   param="Content-Type")
