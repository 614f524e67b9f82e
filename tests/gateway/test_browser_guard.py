"""What a web page on another site could make a browser send to a gateway without keys:
a "simple" cross-site POST and a DNS-rebound Host, refused in each dialect's shape."""

from __future__ import annotations

import hashlib
import http.client
import json
from pathlib import Path

import openai
import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

CHAT = json.dumps({"model": "coder", "messages": [{"role": "user", "content": "hi"}]})


def send(gw: Gateway, path: str, body: str, headers: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("POST", path, body, headers)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded"])
def test_a_cross_site_simple_post_cannot_plant_a_document_or_chat(gateway: Gateway, llm: FakeLLM,
                                                                  content_type: str) -> None:
    browser = {"Content-Type": content_type, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    status, body = send(gateway, "/v1/knowledge/home/documents", '{"id": "planted", "text": "x"}', browser)
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"
    status, _ = send(gateway, "/v1/chat/completions", CHAT, browser)
    assert status == 415
    assert llm.requests() == []


def test_each_dialect_refuses_in_its_own_shape(gateway: Gateway) -> None:
    plain = {"Content-Type": "text/plain"}
    assert send(gateway, "/api/chat", CHAT, plain) == (
        415, {"error": "Content-Type 'text/plain' is not accepted: send the body as application/json"})
    status, body = send(gateway, "/v1/messages", CHAT, plain)
    assert status == 415 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_curl_dash_d_still_works(gateway: Gateway, llm: FakeLLM) -> None:
    status, body = send(gateway, "/v1/chat/completions", CHAT, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert send(gateway, "/v1/chat/completions", CHAT, {})[0] == 200
    assert send(gateway, "/v1/chat/completions", CHAT, {"Content-Type": "application/json; charset=utf-8"})[0] == 200


@pytest.mark.parametrize(("host", "status"), [("evil.example", 403), ("evil.example:8080", 403),
                                              ("localhost", 200), ("127.0.0.1", 200), ("[::1]:8080", 200),
                                              ("192.168.1.20:8080", 200), ("app.localhost", 200)])
def test_without_keys_a_rebound_host_name_is_refused(gateway: Gateway, host: str, status: int) -> None:
    got, body = send(gateway, "/v1/chat/completions", CHAT, {"Content-Type": "application/json", "Host": host})
    assert got == status
    if status == 403:
        assert body["error"]["type"] == "permission_error" and "APPLIANCE_ALLOWED_HOSTS" in body["error"]["message"]


def test_allowed_hosts_and_keys_let_a_name_through(tmp_path: Path, fake_llm: FakeLLM) -> None:
    gw = start_gateway(tmp_path / "named", catalog_for(fake_llm.port), APPLIANCE_ALLOWED_HOSTS='["gateway.lan"]')
    try:
        headers = {"Content-Type": "application/json"}
        assert send(gw, "/v1/chat/completions", CHAT, {**headers, "Host": "gateway.lan:8080"})[0] == 200
        assert send(gw, "/v1/chat/completions", CHAT, {**headers, "Host": "other.lan"})[0] == 403
    finally:
        procs.stop(gw.proc)
    digest = hashlib.sha256(b"sk-home-1").hexdigest()
    keyed = start_gateway(tmp_path / "keyed", catalog_for(fake_llm.port, extra=f'\n[[api_keys]]\nname = "me"\nsha256 = "{digest}"\n'))
    try:  # with keys a page cannot send one, so any name may reach the gateway
        status, _ = send(keyed, "/v1/chat/completions", CHAT, {"Content-Type": "application/json",
                                                                "Host": "gateway.example", "Authorization": "Bearer sk-home-1"})
        assert status == 200
    finally:
        procs.stop(keyed.proc)


def test_a_public_bind_without_keys_is_said_loudly(tmp_path: Path, fake_llm: FakeLLM) -> None:
    # refused without APPLIANCE_ALLOW_NO_KEYS (tests/access); allowed, it is said loudly
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port), APPLIANCE_HOST="0.0.0.0", APPLIANCE_ALLOW_NO_KEYS="true")
    try:
        warned = [ln for ln in gw.log_lines() if ln.get("level") == "warning" and "no API keys" in ln.get("msg", "")]
        assert warned and warned[0]["host"] == "0.0.0.0"
        assert openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0).models.list().data
    finally:
        procs.stop(gw.proc)
