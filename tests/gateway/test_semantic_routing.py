"""Asking for a router (`auto`) with the official clients: the prompt picks a candidate by
its card, the response says which and why, the client's model name stays, and the
decision is counted and recorded."""

from __future__ import annotations

import json
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, start_gateway
from tests.procs import ROOT

CODING = "Fix the bug in this Python function: def mean(xs): return sum(xs) / len(xs) - 1"
GENERAL = "Suggest a nice name for my new kitten"
REASONING = "A bat and a ball cost 1.10 together; the bat costs 1.00 more than the ball. What does the ball cost?"


MODEL_OF = {"coding": "coder", "reasoning": "reasoner", "general": "general"}


def catalog(llm_port: int, training: Path | None = None, unlabelled: str | None = None) -> str:
    cards = tomllib.loads((ROOT / "tests" / "perf" / "routing_cards.toml").read_text())
    out = [f'[[backends]]\nname = "local"\nkind = "vllm"\nbase_url = "http://127.0.0.1:{llm_port}/v1"\n']
    for model in cards["models"]:
        out.append("[[models]]\n" + "\n".join([
            f'id = "{model["id"]}"', 'backend = "local"', 'upstream_id = "fake-model"',
            f"description = {json.dumps(model['description'])}", f"examples = {json.dumps(model['examples'])}",
            f"context_length = {model['context_length']}"]) + "\n")
    router = cards["routers"][0]
    out.append(f'[[routers]]\nid = "auto"\ncandidates = {json.dumps(router["candidates"])}\n'
               f'default = "{router["default"]}"\nmargin = {router["margin"]}\nbudget_ms = 1000\n')
    if training is not None:
        out.append(f'[[routers]]\nid = "learnt"\ncandidates = {json.dumps(router["candidates"])}\n'
                   f'default = "{router["default"]}"\nbudget_ms = 1000\ntraining = {json.dumps(str(training))}\n')
    if unlabelled is not None:
        out.append(f'[[routers]]\nid = "taught"\ncandidates = {json.dumps(router["candidates"])}\n'
                   f'default = "{router["default"]}"\nmargin = {router["margin"]}\nbudget_ms = 1000\n'
                   f'unlabelled = {json.dumps(unlabelled)}\n')
    return "\n".join(out)


def training_file(folder: Path) -> Path:
    """90 of the labelled prompts, 30 a class, as a router's training file."""
    rows = [json.loads(line) for line in (ROOT / "tests" / "perf" / "routing_prompts.jsonl").read_text().splitlines()]
    picked = [r for label in MODEL_OF for r in [r for r in rows if r["label"] == label][:30]]
    path = folder / "learnt.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "model": MODEL_OF[r["label"]]}) + "\n" for r in picked))
    return path


@pytest.fixture(scope="module")
def gw(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("routers")
    # "taught" learns from the 924 shipped prompts, as docs/routing.md recommends: a catalog that
    # big once broke the start (it went to the workers in one environment variable, over 128 KiB)
    g = start_gateway(folder, catalog(fake_llm.port, training_file(folder), "builtin:roles"), timeout=90)
    try:
        yield g
    finally:
        procs.stop(g.proc)


def test_openai_client_asking_for_auto_gets_the_coder_for_code(gw: Gateway, llm: FakeLLM) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": CODING}])
    assert raw.headers["x-appliance-selected-model"] == "coder"
    assert raw.headers["x-appliance-route-reason"].startswith("cos ")
    assert raw.parse().model == "auto"
    assert float(raw.headers["x-appliance-overhead-ms"]) > 0
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": GENERAL}], stream=True)
    assert raw.headers["x-appliance-selected-model"] == "general"


def test_a_router_with_training_prompts_decides_by_what_it_learnt(gw: Gateway, llm: FakeLLM) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="learnt", messages=[{"role": "user", "content": CODING}])
    assert raw.headers["x-appliance-selected-model"] == "coder" and raw.parse().model == "learnt"
    assert raw.headers["x-appliance-route-reason"].startswith("p ")
    raw = client.chat.completions.with_raw_response.create(
        model="learnt", messages=[{"role": "user", "content": GENERAL}])
    assert raw.headers["x-appliance-selected-model"] == "general"


def test_a_router_given_unlabelled_prompts_decides_by_what_its_cards_taught_it(gw: Gateway, llm: FakeLLM) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    for prompt, chosen in ((CODING, "coder"), (GENERAL, "general"), (REASONING, "reasoner")):
        raw = client.chat.completions.with_raw_response.create(
            model="taught", messages=[{"role": "user", "content": prompt}])
        assert raw.headers["x-appliance-selected-model"] == chosen and raw.parse().model == "taught"
        assert raw.headers["x-appliance-route-reason"].startswith("p ")


def test_anthropic_and_ollama_clients_can_ask_for_auto(gw: Gateway, llm: FakeLLM) -> None:
    reply = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).messages.with_raw_response.create(
        model="auto", max_tokens=20, messages=[{"role": "user", "content": CODING}])
    assert reply.headers["x-appliance-selected-model"] == "coder" and reply.parse().model == "auto"
    answer = ollama.Client(host=gw.url).chat(model="auto", messages=[{"role": "user", "content": GENERAL}])
    assert answer.model == "auto" and answer.message.content
    assert "auto" in [m.model for m in ollama.Client(host=gw.url).list().models]
    generated = ollama.Client(host=gw.url).generate(model="auto", prompt=CODING)
    assert generated.model == "auto" and generated.response
    assert llm.requests()[-1]["model"] == "fake-model"


def test_the_responses_api_can_ask_for_auto(gw: Gateway, llm: FakeLLM) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    raw = client.responses.with_raw_response.create(model="auto", input=CODING)
    assert raw.headers["x-appliance-selected-model"] == "coder"
    assert raw.headers["x-appliance-route-reason"].startswith("cos ")
    reply = raw.parse()
    assert reply.model == "auto" and reply.output_text
    with client.responses.with_streaming_response.create(model="auto", input=GENERAL, stream=True) as resp:
        assert resp.headers["x-appliance-selected-model"] == "general"
        kinds = [event.type for event in resp.parse()]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_routers_are_listed_counted_and_recorded(gw: Gateway, llm: FakeLLM) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    listed: dict[str, Any] = {m.id: m for m in client.models.list().data}
    assert "auto" in listed and listed["auto"].model_extra["router"]["default"] == "general"
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": CODING}])
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'appliance_router_decisions_total{candidate="coder",defaulted="false",router="auto"}' in metrics
    assert "appliance_router_decision_seconds_bucket" in metrics
    routed = [ln for ln in gw.log_lines() if ln.get("msg") == "routed"]
    assert routed and routed[-1]["router"] == "auto" and routed[-1]["selected"] == "coder"


def test_the_router_fails_open_to_its_default(fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory,
                                              llm: FakeLLM) -> None:
    tight = catalog(fake_llm.port).replace("budget_ms = 1000", "budget_ms = 0.001")
    g = start_gateway(tmp_path_factory.mktemp("tight"), tight)
    try:
        raw = openai.OpenAI(base_url=g.base_url, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": CODING}])
        assert raw.headers["x-appliance-selected-model"] == "general"
        assert raw.headers["x-appliance-route-reason"].startswith("default:")
        assert raw.parse().choices[0].message.content
    finally:
        procs.stop(g.proc)
