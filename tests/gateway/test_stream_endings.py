"""How a request ends, as an operator reads it: a hang-up is one JSON access line with 499
and nothing else; a broken upstream stream ends with the dialect's error frame and the
gateway keeps serving; a body trickled in too slowly is cut off with a 408."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anthropic
import ollama
import openai
import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

CHAT = {"model": "coder", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gw(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("endings"), catalog_for(fake_llm.port),
                      APPLIANCE_BODY_READ_TIMEOUT_S="1")
    try:
        yield g
    finally:
        procs.stop(g.proc)


def wait_for_line(gw: Gateway, predicate, timeout: float = 5.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in gw.log_lines():
            if predicate(line):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no such log line; log: {gw.log.read_text()[-2000:]}")


def test_hanging_up_mid_stream_leaves_one_json_access_line_and_no_traceback(gw: Gateway, llm: FakeLLM) -> None:
    before = len(gw.log_lines())
    for _ in range(5):
        body = json.dumps(dict(CHAT, stream=True, fake={"tokens": 200, "delay_ms": 20})).encode()
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json",
                                                             "X-Correlation-ID": "hangup-test"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read1(64)
        conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        conn.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(
            1 for line in gw.log_lines()[before:] if line.get("correlation_id") == "hangup-test") < 5:
        time.sleep(0.05)
    time.sleep(0.3)  # anything printed after the access line would show by now
    new = gw.log_lines()[before:]
    assert [line for line in new if "raw" in line] == []  # every line is JSON: no traceback on stdout
    mine = [line for line in new if line.get("correlation_id") == "hangup-test"]
    assert [(line["msg"], line["status"]) for line in mine] == [("request", 499)] * 5


BROKEN = ['{"choices": "not a list", "object": "chat.completion.chunk"}',
          '{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "one"}]}}]}',
          '{"choices": [], "usage": {"prompt_tokens": "many"}}', "{not json", "[1,2,3]", "\udcff"]


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "ollama"])
def test_unreadable_upstream_events_are_skipped_and_counted_and_the_answer_is_whole(
        gw: Gateway, llm: FakeLLM, dialect: str) -> None:
    llm.control(inject=BROKEN, tokens=4)
    if dialect == "openai":
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
    elif dialect == "anthropic":
        with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.stream(
                model="coder", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
            text = stream.get_final_text()
    else:
        text = "".join(part.message.content or "" for part in ollama.Client(host=gw.url).chat(
            model="coder", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert text == "tok0 tok1 tok2 tok3"
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    counted = [ln for ln in metrics.splitlines()
               if ln.startswith('appliance_upstream_malformed_events_total{backend="local-vllm"}')]
    assert counted and float(counted[0].split()[-1]) >= len(BROKEN)


def test_a_backends_429_keeps_its_retry_after_and_its_words_stay_out_of_the_log(
        gw: Gateway, llm: FakeLLM) -> None:
    llm.control(status=429, retry_after="7", message="slow down, you sent: my secret prompt")
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="coder", messages=[{"role": "user", "content": "my secret prompt"}],
                                       extra_headers={"X-Correlation-ID": "retry-after-test"})
    assert err.value.response.headers["retry-after"] == "7"
    assert "my secret prompt" in err.value.message  # the client gets the backend's words
    line = wait_for_line(gw, lambda ln: ln.get("msg") == "request failed"
                         and ln.get("correlation_id") == "retry-after-test")
    assert line["status"] == 429 and "secret" not in gw.log.read_text()


def test_a_body_trickled_slower_than_the_limit_is_cut_off_with_408(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            part = sock.recv(4096)
            if not part:
                break
            reply += part
        took = time.monotonic() - started
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert 0.9 < took < 5


def test_the_log_says_nothing_that_is_not_json(gw: Gateway, tmp_path: Path) -> None:
    assert [line for line in gw.log_lines() if "raw" in line] == []
