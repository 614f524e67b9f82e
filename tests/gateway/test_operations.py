"""What an operator sees: correlation ids, access log, limits, health, metrics, keys, signals."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

CHAT = {"model": "coder", "messages": [{"role": "user", "content": "hi"}]}


def post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_correlation_id_is_echoed_and_on_the_access_log_line(gateway: Gateway, llm: FakeLLM) -> None:
    status, headers, _ = post(f"{gateway.base_url}/chat/completions", CHAT, {"X-Request-ID": "req-abc-123"})
    assert status == 200 and headers["x-correlation-id"] == "req-abc-123"

    def logged() -> bool:
        return any(line.get("correlation_id") == "req-abc-123" and line.get("msg") == "request"
                   for line in gateway.log_lines())
    wait_for(logged)
    line = next(x for x in gateway.log_lines() if x.get("correlation_id") == "req-abc-123" and x.get("msg") == "request")
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions" and line["status"] == 200
    assert line["model"] == "coder" and line["backend"] == "local-vllm" and line["duration_ms"] > 0
    _, headers, _ = post(f"{gateway.base_url}/chat/completions", CHAT)
    assert len(headers["x-correlation-id"]) == 32  # generated when absent
    _, again, _ = post(f"{gateway.base_url}/chat/completions", CHAT)
    assert again["x-correlation-id"] != headers["x-correlation-id"]


def test_error_log_line_carries_the_correlation_id(gateway: Gateway) -> None:
    post(f"{gateway.base_url}/chat/completions", b"{oops", {"X-Correlation-ID": "bad-json-1"})
    wait_for(lambda: any(x.get("correlation_id") == "bad-json-1" and x.get("level") == "warning"
                         for x in gateway.log_lines()))


def test_oversize_body_is_413_in_openai_shape(gateway: Gateway) -> None:
    big = dict(CHAT, messages=[{"role": "user", "content": "x" * 70_000}])
    status, _, body = post(f"{gateway.base_url}/chat/completions", big)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert post(f"{gateway.base_url}/chat/completions", CHAT)[0] == 200


def test_unknown_path_and_method_are_openai_shaped(gateway: Gateway) -> None:
    status, body = get(f"{gateway.base_url}/nothing-here")
    assert status == 404 and "Unknown path" in json.loads(body)["error"]["message"]
    status, body = get(f"{gateway.base_url}/chat/completions")
    assert status == 405 and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_healthz_and_readyz_report_backends(gateway: Gateway) -> None:
    assert get(f"{gateway.url}/healthz") == (200, b'{"status":"ok"}')
    status, body = get(f"{gateway.url}/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["status"] == "ready"
    assert ready["backends"]["local-vllm"]["ok"] is True
    assert ready["backends"]["dead"]["ok"] is False


def test_readyz_is_503_when_no_backend_answers(tmp_path: Path) -> None:
    dead = procs.free_port()
    catalog = f'[[backends]]\nname = "gone"\nkind = "ollama"\nbase_url = "http://127.0.0.1:{dead}/v1"\n'
    gw = start_gateway(tmp_path, catalog)
    try:
        status, body = get(f"{gw.url}/readyz")
        assert status == 503 and json.loads(body)["backends"]["gone"]["ok"] is False
        assert get(f"{gw.url}/healthz")[0] == 200
    finally:
        procs.stop(gw.proc)


def test_metrics_count_requests_and_tokens(gateway: Gateway, llm: FakeLLM) -> None:
    post(f"{gateway.base_url}/chat/completions", CHAT)
    status, body = get(f"{gateway.url}/metrics")
    text = body.decode()
    assert status == 200
    assert 'appliance_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert 'appliance_tokens_total{direction="output",model="coder"}' in text
    assert "appliance_cost_usd_total" in text


def test_client_disconnect_cancels_the_upstream_stream(gateway: Gateway, llm: FakeLLM) -> None:
    body = json.dumps(dict(CHAT, stream=True, fake={"tokens": 200, "delay_ms": 20})).encode()
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read1(64)  # the stream has started
    conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    conn.close()
    # 200 tokens x 20 ms = 4 s if the gateway kept reading; it must drop the upstream well before.
    wait_for(lambda: llm.stats()["cancelled"] == 1, timeout=3.0)
    assert llm.stats()["completed"] == 0


def test_sigterm_drains_an_in_flight_stream_and_notifies_systemd(tmp_path: Path, fake_llm: FakeLLM) -> None:
    sock_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    listener.settimeout(0.2)
    messages: list[str] = []

    def collect() -> None:
        while True:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return
    threading.Thread(target=collect, daemon=True).start()
    gw = start_gateway(tmp_path / "gw", catalog_for(fake_llm.port), NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="400000")
    try:
        wait_for(lambda: any("READY=1" in m for m in messages))
        wait_for(lambda: sum("WATCHDOG=1" in m for m in messages) >= 2)
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        stream = client.chat.completions.create(model="coder", messages=CHAT["messages"], stream=True,  # type: ignore[arg-type]
                                                extra_body={"fake": {"tokens": 30, "delay_ms": 50}})
        first = next(iter(stream))
        gw.proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # 1.5 s of tokens still to come: they must all arrive
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
        assert text.endswith("tok29") and rest[-1].choices[0].finish_reason == "stop"
        assert gw.proc.wait(15) == 0
        wait_for(lambda: any("STOPPING=1" in m for m in messages))
        assert any(x.get("msg") == "gateway stopped" for x in gw.log_lines())
    finally:
        procs.stop(gw.proc)
        listener.close()


def test_api_keys_are_checked_when_configured(tmp_path: Path, fake_llm: FakeLLM) -> None:
    digest = hashlib.sha256(b"sk-home-1").hexdigest()
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port, extra=f'\n[[api_keys]]\nname = "me"\nsha256 = "{digest}"\n'))
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.base_url, api_key="sk-wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=gw.base_url, api_key="sk-home-1", max_retries=0)
        assert ok.chat.completions.create(model="coder", messages=CHAT["messages"]).model == "coder"  # type: ignore[arg-type]
        assert get(f"{gw.url}/healthz")[0] == 200
        assert "sk-home-1" not in gw.log.read_text() and "sk-wrong" not in gw.log.read_text()
    finally:
        procs.stop(gw.proc)


def test_two_workers_serve_and_metrics_add_up(tmp_path: Path, fake_llm: FakeLLM) -> None:
    gw = start_gateway(tmp_path, catalog_for(fake_llm.port), workers=2)
    try:
        for _ in range(6):
            assert post(f"{gw.base_url}/chat/completions", CHAT)[0] == 200
        text = get(f"{gw.url}/metrics")[1].decode()
        line = next(x for x in text.splitlines()
                    if x.startswith('appliance_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}'))
        assert float(line.split()[-1]) == 6.0
    finally:
        procs.stop(gw.proc)
    assert os.path.isdir(gw.state_dir / "metrics")


def test_sigterm_during_worker_start_up_is_not_lost(tmp_path: Path, fake_llm: FakeLLM) -> None:
    # The port opens before the workers finish starting; a SIGTERM then used to be swallowed
    # by a worker and the gateway hung until the kill timeout (35 s).
    for attempt in range(3):
        gw = start_gateway(tmp_path / str(attempt), catalog_for(fake_llm.port), workers=2)
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        try:
            assert gw.proc.wait(10) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"attempt {attempt}: still running 10 s after SIGTERM; its log ends:\n"
                        f"{gw.log.read_text()[-3000:]}")
        finally:
            procs.stop(gw.proc)
        assert time.monotonic() - started < 10


def test_metrics_label_sets_stay_bounded_whatever_callers_send(gateway: Gateway, llm: FakeLLM) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    for i in range(60):  # invented methods
        conn.request(f"X{i}ZZ", "/v1/models")
        conn.getresponse().read()
    for i in range(230):  # invented model names that a route glob matches
        conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "model": f"qwen3-made-up-{i}"}),
                     {"Content-Type": "application/json"})
        assert conn.getresponse().read()
    text = get(f"{gateway.url}/metrics")[1].decode()
    methods = {line.split('method="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("appliance_http_requests_total{")}
    assert methods <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"} and "other" in methods
    models = {line.split('model="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("appliance_chat_completions_total{")}
    assert len(models) <= 201 and "other" in models
