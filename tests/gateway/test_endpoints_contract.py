"""More endpoints with the official clients: legacy `/v1/completions` (passed through to a vLLM
backend, translated onto chat for a cloud one), `/v1/moderations` through a Llama Guard model,
`moderate = "input"` refusing flagged input in every dialect, and Anthropic `count_tokens`
(the backend's /tokenize, or the gateway's estimate)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import openai
import pytest

from tests import procs
from tests.conftest import CLOUD_BACKEND, FakeLLM, Gateway, catalog_for, start_gateway

EXTRA = CLOUD_BACKEND + """
[[models]]
id = "guard"
backend = "local-vllm"
upstream_id = "llama-guard-3"

[[models]]
id = "screened"
backend = "local-vllm"
upstream_id = "fake-model"
moderate = "input"

[moderations]
model = "guard"
"""
UNSAFE = {"guard": "unsafe\nS1,S10", "guard_when": "FLAGME"}


@pytest.fixture(scope="module")
def gw(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("endpoints-gw"),
                            catalog_for(fake_llm.port, extra=EXTRA.format(port=fake_llm.port)))
    try:
        yield gateway
    finally:
        procs.stop(gateway.proc)


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)


def asked(llm: FakeLLM) -> list[dict[str, Any]]:
    return [r for r in llm.requests() if r.get("model") != "llama-guard-3"]


# --- /v1/completions

def test_completion_is_passed_through_to_a_backend_that_has_it(gw: Gateway, llm: FakeLLM) -> None:
    reply = oai(gw).completions.create(model="coder", prompt="Once upon", max_tokens=3, echo=True)
    assert reply.object == "text_completion" and reply.model == "coder"
    assert reply.choices[0].text == "Once upontok0 tok1 tok2" and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    sent = asked(llm)[-1]
    assert sent["prompt"] == "Once upon" and sent["model"] == "fake-model" and "messages" not in sent


def test_completion_is_translated_onto_chat_for_a_chat_only_backend(gw: Gateway, llm: FakeLLM) -> None:
    reply = oai(gw).completions.create(model="cloud-x", prompt=["one two", "three"], max_tokens=2, echo=True)
    assert [(c.index, c.text, c.finish_reason) for c in reply.choices] == [
        (0, "one twotok0 tok1", "length"), (1, "threetok0 tok1", "length")]
    assert reply.usage is not None and reply.usage.prompt_tokens == 3 and reply.usage.completion_tokens == 4
    sent = asked(llm)
    assert [r["messages"] for r in sent] in ([[{"role": "user", "content": "one two"}], [{"role": "user", "content": "three"}]],
                                            [[{"role": "user", "content": "three"}], [{"role": "user", "content": "one two"}]])
    assert all("prompt" not in r and "echo" not in r for r in sent)


@pytest.mark.parametrize("model", ["coder", "cloud-x"])
def test_completion_streams_text_chunks_and_usage(gw: Gateway, llm: FakeLLM, model: str) -> None:
    chunks = list(oai(gw).completions.create(model=model, prompt=["a", "b"], max_tokens=3, stream=True,
                                             stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" and c.model == model for c in chunks)
    texts = {i: "".join(ch.text for c in chunks for ch in c.choices if ch.index == i) for i in (0, 1)}
    assert texts == {0: "tok0 tok1 tok2", 1: "tok0 tok1 tok2"}
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["length", "length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert ("prompt" in asked(llm)[-1]) is (model == "coder")


def test_token_id_prompts_pass_through_or_are_a_clear_400(gw: Gateway, llm: FakeLLM) -> None:
    reply = oai(gw).completions.create(model="coder", prompt=[1, 2, 3], max_tokens=2)
    assert reply.choices[0].text == "tok0 tok1"
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).completions.create(model="cloud-x", prompt=[[1, 2], [3]], max_tokens=2)
    assert err.value.body["param"] == "prompt" and "token ids" in err.value.body["message"]  # type: ignore[index]


# --- /v1/moderations

def test_moderation_answers_in_openai_shape(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(**UNSAFE)
    result = oai(gw).moderations.create(input=["good morning", "FLAGME please"])
    assert result.model == "guard" and result.id.startswith("modr-")
    safe, unsafe = result.results
    assert not safe.flagged and not any(safe.categories.model_dump().values())
    assert unsafe.flagged and unsafe.categories.violence and unsafe.categories.hate and unsafe.categories.illicit_violent
    assert not unsafe.categories.sexual and unsafe.category_scores.violence == 1.0 and unsafe.category_scores.sexual == 0.0
    assert unsafe.category_applied_input_types.violence == ["text"]
    prompts = [r["prompt"] for r in llm.requests() if r.get("model") == "llama-guard-3"]
    assert len(prompts) == 2 and all("<BEGIN UNSAFE CONTENT CATEGORIES>" in p and "S14: Code Interpreter Abuse." in p
                                     for p in prompts)


def test_moderation_reads_the_text_parts_of_a_multimodal_input(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(**UNSAFE)
    result = oai(gw).moderations.with_raw_response.create(input=[
        {"type": "text", "text": "look: FLAGME"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}])
    assert "image part" in (result.headers.get("x-appliance-warning") or "")
    assert [r.flagged for r in result.parse().results] == [True]


def test_moderation_without_a_guard_names_the_setting(gateway: Gateway, llm: FakeLLM) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        oai(gateway).moderations.create(input="hello")
    assert err.value.status_code == 503 and "[moderations] model" in err.value.body["message"]  # type: ignore[index]


# --- moderate = "input"

def test_screened_model_refuses_flagged_input_in_every_dialect(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(**UNSAFE)
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="screened", messages=[{"role": "user", "content": "FLAGME now"}])
    assert err.value.code == "content_filter" and "violence" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as aerr:
        anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.create(
            model="screened", max_tokens=5, messages=[{"role": "user", "content": "FLAGME now"}])
    assert aerr.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(ollama.ResponseError) as oerr:
        ollama.Client(host=gw.url).chat(model="screened", messages=[{"role": "user", "content": "FLAGME now"}])
    assert oerr.value.status_code == 400 and "flagged" in oerr.value.error
    assert asked(llm) == []  # no model but the guard saw it
    reply = oai(gw).chat.completions.create(model="screened", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content and len(asked(llm)) == 1


def test_screened_model_fails_closed_when_the_guard_is_down(gw: Gateway, llm: FakeLLM) -> None:
    llm.control(status=500)
    with pytest.raises(openai.APIStatusError) as err:
        oai(gw).chat.completions.create(model="screened", messages=[{"role": "user", "content": "hello"}])
    assert err.value.status_code == 503 and err.value.code == "moderation_unavailable"


# --- /v1/messages/count_tokens

def test_count_tokens_uses_the_backends_tokenizer(gw: Gateway, llm: FakeLLM) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    raw = client.messages.with_raw_response.count_tokens(
        model="coder", system="be brief", messages=[{"role": "user", "content": "how many tokens is this"}])
    assert raw.parse().input_tokens == 7 and raw.headers["x-appliance-token-count"] == "counted"


def test_count_tokens_estimates_without_a_tokenize_endpoint(gw: Gateway, llm: FakeLLM) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    raw = client.messages.with_raw_response.count_tokens(
        model="cloud-x", messages=[{"role": "user", "content": "how many tokens is this"}])
    assert raw.headers["x-appliance-token-count"] == "estimated"
    assert raw.http_response.json()["appliance"] == {"estimated": True, "counted_by": "gateway tokenizer"}
    assert 5 <= raw.parse().input_tokens <= 20


def test_translated_completion_warns_about_what_chat_cannot_carry(gw: Gateway, llm: FakeLLM) -> None:
    raw = oai(gw).completions.with_raw_response.create(model="cloud-x", prompt="a", suffix="z", max_tokens=1)
    assert "suffix" in (raw.headers.get("x-appliance-warning") or "") and raw.parse().choices[0].text == "tok0"
