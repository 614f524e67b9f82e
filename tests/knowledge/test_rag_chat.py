"""RAG chat through the official openai client: the backend sees the retrieved context, the
client sees its sources; with PostgreSQL down the chat still answers, directly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai

from appliance.db.migrate import migrate
from appliance.embedded.postgres import EmbeddedPostgres
from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway
from tests.knowledge.conftest import EMBEDDING_DIM, write_docs
from tests.knowledge.test_knowledge_api import DOCS, call

QUESTION = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the guest wifi network called?"}]


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)


def test_the_backend_receives_numbered_sources_and_the_client_sees_them(rag_gateway: Gateway, llm: FakeLLM,
                                                                         workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS)
    raw = client(rag_gateway).chat.completions.with_raw_response.create(
        model="coder", messages=QUESTION, extra_headers={"x-workspace": workspace, "x-rag-top-k": "2"})  # type: ignore[arg-type]
    reply = raw.parse()
    sent = llm.requests()[-1]["messages"]
    assert sent[0] == QUESTION[0]  # the client's own system message stays first
    assert sent[1]["role"] == "system" and "[1] (router.md)" in sent[1]["content"] and "OAKWIFI" in sent[1]["content"]
    assert sent[1]["content"].count("\n[") == 2  # x-rag-top-k: 2 passages
    assert sent[2] == QUESTION[1]
    assert raw.headers["x-appliance-route"] == "rag"
    assert raw.headers["x-appliance-sources"].split(",")[0] == "router.md"
    assert reply.model_extra is not None and reply.model_extra["appliance"]["sources"][0] == "router.md"


def test_streaming_rag_chat_carries_the_sources_header(rag_gateway: Gateway, llm: FakeLLM, workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS)
    with client(rag_gateway).chat.completions.with_streaming_response.create(
            model="coder", messages=QUESTION, stream=True, extra_headers={"x-workspace": workspace}) as resp:  # type: ignore[arg-type]
        assert resp.headers["x-appliance-sources"].startswith("router.md")
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text.startswith("tok0")
    assert "OAKWIFI" in llm.requests()[-1]["messages"][1]["content"]


def test_without_the_header_the_request_is_direct(rag_gateway: Gateway, llm: FakeLLM) -> None:
    raw = client(rag_gateway).chat.completions.with_raw_response.create(model="coder", messages=QUESTION)  # type: ignore[arg-type]
    assert raw.headers["x-appliance-route"] == "direct" and "x-appliance-sources" not in raw.headers
    assert llm.requests()[-1]["messages"] == QUESTION


def test_postgres_down_degrades_rag_to_direct_and_the_gateway_keeps_serving(
        tmp_path: Path, fake_llm: FakeLLM) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = pg.start()
    migrate(url, {"embedding_dim": EMBEDDING_DIM})
    gw = start_gateway(tmp_path / "gw", catalog_for(fake_llm.port), APPLIANCE_DATABASE_URL=url,
                       APPLIANCE_KNOWLEDGE__DB_BREAKER_COOLDOWN_S="3")
    try:
        fake_llm.reset()
        assert call(gw, "POST", "/knowledge/home/documents", DOCS[:1])[0] == 201
        pg.stop()
        took = []
        for _ in range(4):
            started = time.monotonic()
            raw = client(gw).chat.completions.with_raw_response.create(
                model="coder", messages=QUESTION, extra_headers={"x-workspace": "home"})  # type: ignore[arg-type]
            took.append(time.monotonic() - started)
        # The first finds PostgreSQL gone; the breaker remembers, so the next ones do not wait.
        assert max(took[1:]) < 0.5, took
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-appliance-route"] == "direct"
        assert "retrieval unavailable" in raw.headers["x-appliance-warning"]
        assert fake_llm.requests()[-1]["messages"] == QUESTION
        status, body = call(gw, "POST", "/knowledge/home/search", {"query": "heat"})
        assert status == 503 and body["error"]["code"] == "dependency_unavailable"
        with urllib.request.urlopen(f"{gw.url}/readyz", timeout=10) as resp:
            ready = json.loads(resp.read())
        assert resp.status == 200 and ready["dependencies"]["postgres"]["ok"] is False
        warned = [json.loads(x) for x in gw.log.read_text().splitlines() if "retrieval unavailable" in x]
        assert warned and warned[-1]["correlation_id"] == raw.headers["x-correlation-id"]
        pg.start()  # and it comes back by itself, once the breaker's cool-down lets a probe through
        back = len(gw.log.read_text().splitlines())
        deadline = time.monotonic() + 30
        while call(gw, "POST", "/knowledge/home/search", {"query": "heat pump"})[0] != 200:
            assert time.monotonic() < deadline, "the store did not come back"
            time.sleep(0.5)
        # the first probe once it is back finds it (not a connection the outage broke)
        after = gw.log.read_text().splitlines()[back:]
        assert not [x for x in after if "PostgreSQL breaker open" in x], after
    finally:
        procs.stop(gw.proc)
        pg.stop()


def test_a_database_made_for_another_model_stops_the_start(tmp_path: Path, fake_llm: FakeLLM) -> None:
    with EmbeddedPostgres(tmp_path / "pg") as pg:
        migrate(pg.url, {"embedding_dim": 768})
        (tmp_path / "catalog.toml").write_text(catalog_for(fake_llm.port))
        # Not start_gateway(): Granian may bind the port before start-up fails, so waiting for
        # the port races with the exit. The process must end, non-zero, saying why.
        log = tmp_path / "gateway.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "appliance", "serve", "--port", str(procs.free_port()),
                 "--config", str(tmp_path / "catalog.toml")], cwd=procs.ROOT, stdout=out, stderr=subprocess.STDOUT,
                env=procs.child_env(APPLIANCE_STATE_DIR=str(tmp_path / "state"), APPLIANCE_DATABASE_URL=pg.url))
            try:
                assert proc.wait(90) != 0
            finally:
                procs.stop(proc)
        text = log.read_text()
        assert "768-dim embeddings" in text and "384" in text


def test_ingest_command_is_idempotent(tmp_path: Path, migrated_pg: str, workspace: str) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "# A\n\nAlpha text about boats.", "sub/b.txt": "Bravo text.",
                                          "c.html": "<h1>C</h1><p>Charlie <b>bold</b> text.</p><script>x()</script>",
                                          "skip.bin": "ignored"})

    def ingest() -> str:
        run = subprocess.run([sys.executable, "-m", "appliance", "ingest", str(docs), "--workspace", workspace],
                             capture_output=True, text=True, cwd=procs.ROOT, timeout=120,
                             env=procs.child_env(APPLIANCE_DATABASE_URL=migrated_pg))
        assert run.returncode == 0, run.stderr
        return run.stdout.strip().splitlines()[-1]
    assert ingest().startswith(f"ingested 3 files into '{workspace}': 3 new, 0 changed, 0 unchanged, 3 chunks")
    assert ingest().startswith(f"ingested 3 files into '{workspace}': 0 new, 0 changed, 3 unchanged, 0 chunks")
    (docs / "sub" / "b.txt").write_text("Bravo text, revised.")
    assert "0 new, 1 changed, 2 unchanged" in ingest()


def test_rag_chat_keeps_answering_when_the_inference_service_dies(
        tmp_path: Path, fake_llm: FakeLLM, migrated_pg: str, workspace: str) -> None:
    port, health = procs.free_port(), procs.free_port()
    service = procs.spawn(["-m", "appliance", "inference", "--listen", f"127.0.0.1:{port}",
                           "--health-listen", f"127.0.0.1:{health}"], port, log=tmp_path / "inference.log",
                          env=procs.child_env(APPLIANCE_KNOWLEDGE__EMBED_THREADS="1"), timeout=60)
    gw = start_gateway(tmp_path / "gw", catalog_for(fake_llm.port), APPLIANCE_DATABASE_URL=migrated_pg,
                       APPLIANCE_INFERENCE_URL=f"grpc://127.0.0.1:{port}")
    try:
        call(gw, "POST", f"/knowledge/{workspace}/documents", DOCS)

        def ask() -> openai._legacy_response.LegacyAPIResponse:  # type: ignore[name-defined]
            return client(gw).chat.completions.with_raw_response.create(
                model="coder", messages=QUESTION, extra_headers={"x-workspace": workspace})  # type: ignore[arg-type]
        assert ask().headers["x-appliance-sources"].startswith("router.md")
        service.kill()  # the inference host goes away mid-run
        service.wait(10)
        for _ in range(3):
            raw = ask()
            assert raw.headers["x-appliance-route"] == "rag"
            assert raw.headers["x-appliance-sources"].startswith("router.md")  # retrieved with local models
        with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        fallbacks = sum(float(line.split()[-1]) for line in text.splitlines()
                        if line.startswith("appliance_inference_fallbacks_total{"))
        assert fallbacks >= 1
        assert 'appliance_inference_breaker_state{breaker="inference"} 1.0' in text  # open: no more timeouts paid
    finally:
        procs.stop(gw.proc)
        procs.stop(service)
