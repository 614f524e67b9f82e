"""No input gets a 5xx: hostile bodies, paths and query strings on every endpoint, against a
real gateway process whose upstream, database and models all work (tests/fuzz/conftest.py).

Two halves: a sweep that puts every `HOSTILE` value (and nothing) in every node of one rich
valid body per endpoint, so each field meets each wrong type for certain; and hypothesis'
bodies (schema-shaped, then mutated; any JSON; raw bytes), for the combinations nobody listed.
Each answer must be below 500, and a refusal must be the dialect's own error body. A document
the gateway accepts must leave its workspace listable and searchable. After each test the
gateway still answers `/healthz` and has logged no error. Examples are derandomized and no
example database is kept, so a run in CI sees exactly what a run here saw (about a minute).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any, Final

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway
from tests.fuzz import strategies as s

EXAMPLES: Final = 150
FUZZ: Final = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
                       suppress_health_check=list(HealthCheck))

POSTS: Final = {
    "/v1/chat/completions": s.openai_chat,
    "/v1/messages": s.anthropic_messages,
    "/api/chat": s.ollama_chat,
    "/api/generate": s.ollama_generate,
    "/api/show": s.ollama_show,
    "/v1/embeddings": s.openai_embeddings,
    "/v1/rerank": s.rerank,
    "/api/embed": s.ollama_embed,
    "/api/embeddings": s.ollama_embeddings,
}
CHATS: Final = frozenset({"/v1/chat/completions", "/v1/messages", "/api/chat", "/api/generate"})
RAG_WORKSPACES: Final = st.sampled_from([None, None, "fuzz", "fuzz-empty", "bad ws"])


def answered(resp: httpx.Response) -> None:
    """Below 500; a refusal in its dialect's shape; a 200 stream that did not end in an error."""
    path = resp.request.url.path
    assert resp.status_code < 500, f"{resp.request.method} {path} -> {resp.status_code}: {resp.text[:600]}"
    if resp.status_code >= 400:
        body = resp.json()
        if path.startswith("/v1/messages"):
            assert body["type"] == "error" and isinstance(body["error"]["message"], str), body
        elif path.startswith("/api/"):
            assert isinstance(body["error"], str), body
        else:
            assert set(body["error"]) == {"message", "type", "param", "code"}, body
    elif path in CHATS:
        assert b'"error":' not in resp.content, resp.text[:600]


def log_lines(gateway: Gateway, start: int) -> list[dict[str, Any]]:
    """The gateway's log lines from byte `start`: split at newlines only (fuzzed text holds
    U+2028 and the like, which `str.splitlines` would cut a JSON line at)."""
    with gateway.log.open("rb") as log:
        log.seek(start)
        lines = log.read().split(b"\n")
    out = []
    for line in filter(None, lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"raw": line.decode(errors="replace")})
    return out


@pytest.fixture(autouse=True)
def still_serving(fuzz_gateway: Gateway, http: httpx.Client) -> Iterator[None]:
    """After the test: the gateway is up, answers, and logged no error and nothing but JSON."""
    start = fuzz_gateway.log.stat().st_size
    yield
    assert fuzz_gateway.proc.poll() is None, "the gateway exited"
    assert http.get("/healthz").status_code == 200
    bad = [line for line in log_lines(fuzz_gateway, start) if "raw" in line or line.get("level") in ("error", "critical")]
    assert not bad, bad[:3]


def post(http: httpx.Client, path: str, body: Any, *, ascii_only: bool = True,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(path, content=s.encode(body, ascii_only=ascii_only),
                     headers={"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize("path", list(POSTS))
def test_no_body_gets_a_5xx(http: httpx.Client, path: str) -> None:
    @FUZZ
    @given(body=s.some_json(POSTS[path]), ascii_only=st.booleans(), workspace=RAG_WORKSPACES)
    def run(body: Any, ascii_only: bool, workspace: str | None) -> None:
        headers = {"x-workspace": workspace} if workspace and path in CHATS else {}
        answered(post(http, path, body, ascii_only=ascii_only, headers=headers))

    run()


@pytest.mark.parametrize("path", list(s.CANONICAL))
def test_every_node_of_a_valid_body_with_every_wrong_value(http: httpx.Client, path: str) -> None:
    """The systematic half: each node of the endpoint's rich valid body in turn replaced by each
    HOSTILE value, or removed. All failures are reported, not only the first."""
    body = s.CANONICAL[path]
    answered(ok := post(http, path, body))
    assert ok.status_code in (200, 201), ok.text
    failures = []
    for where in s.paths(body):
        for value in (*s.HOSTILE, s.GONE):
            resp = post(http, path, s.mutate(body, where, value))
            try:
                answered(resp)
            except AssertionError as exc:
                failures.append(f"{'.'.join(map(str, where))} = {'(removed)' if value is s.GONE else repr(value)}: "
                                f"{str(exc)[:200]}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("path", list(POSTS))
def test_no_raw_bytes_get_a_5xx(http: httpx.Client, path: str) -> None:
    @settings(FUZZ, max_examples=EXAMPLES // 3)
    @given(raw=st.one_of(st.binary(max_size=64), st.sampled_from([b"\xff\xfe{}", b'{"model": "\xc3\x28"}', b"null",
                                                                  b"[]", b'"\\u0000"', b"1" * 400, b"{" * 2000])))
    def run(raw: bytes) -> None:
        answered(http.post(path, content=raw, headers={"content-type": "application/json"}))

    run()


def documents_path(workspace: str, suffix: str = "") -> str:
    return f"/v1/knowledge/{urllib.parse.quote(workspace, safe='')}/documents{suffix}"


@FUZZ
@given(workspace=s.workspace, body=s.some_json(s.documents), ascii_only=st.booleans())
def test_no_document_gets_a_5xx_nor_breaks_its_workspace(http: httpx.Client, workspace: str, body: Any,
                                                        ascii_only: bool) -> None:
    resp = post(http, documents_path(workspace), body, ascii_only=ascii_only)
    answered(resp)
    if resp.status_code in (200, 201):  # what was accepted must list and search for everyone after
        answered(http.get(documents_path(workspace)))
        answered(post(http, documents_path(workspace).replace("/documents", "/search"), {"query": "heat pump"}))


@FUZZ
@given(workspace=s.workspace, limit=st.one_of(st.none(), s.query_param), offset=st.one_of(st.none(), s.query_param))
def test_no_listing_gets_a_5xx(http: httpx.Client, workspace: str, limit: str | None, offset: str | None) -> None:
    params = {k: v for k, v in (("limit", limit), ("offset", offset)) if v is not None}
    answered(http.get(documents_path(workspace), params=params))


def test_every_hostile_path_and_query_value(http: httpx.Client) -> None:
    """The systematic half for what is not a body: workspaces, document ids, limit and offset."""
    failures = []
    for workspace in ("fuzz", "x" * 64, "x" * 65, "ws\x00nul", "ws\n", "%00", "ünï"):
        for value in s.QUERY_VALUES:
            for params in ({"limit": value}, {"offset": value}):
                try:
                    answered(http.get(documents_path(workspace), params=params))
                except AssertionError as exc:
                    failures.append(f"{workspace!r} {params}: {str(exc)[:200]}")
        for document_id in (*s.QUERY_VALUES, "a\x00b", "x" * 513, "\u2028"):
            try:
                answered(http.delete(documents_path(workspace, "/" + urllib.parse.quote(document_id, safe=""))))
            except AssertionError as exc:
                failures.append(f"DELETE {workspace!r} {document_id!r}: {str(exc)[:200]}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])


@FUZZ
@given(workspace=s.workspace, document_id=s.document_id)
def test_no_delete_gets_a_5xx(http: httpx.Client, workspace: str, document_id: str) -> None:
    answered(http.delete(documents_path(workspace, "/" + urllib.parse.quote(document_id, safe=""))))


@FUZZ
@given(workspace=st.one_of(st.just("fuzz"), s.workspace), body=s.some_json(s.search), ascii_only=st.booleans())
def test_no_search_gets_a_5xx(http: httpx.Client, workspace: str, body: Any, ascii_only: bool) -> None:
    path = f"/v1/knowledge/{urllib.parse.quote(workspace, safe='')}/search"
    answered(post(http, path, body, ascii_only=ascii_only))


@FUZZ
@given(model=st.one_of(st.sampled_from(s.MODELS), st.text(max_size=40)))
def test_no_model_lookup_gets_a_5xx(http: httpx.Client, model: str) -> None:
    answered(http.get(f"/v1/models/{urllib.parse.quote(model, safe='')}"))
    answered(post(http, "/api/show", {"model": model}))


def test_the_listings_answer(http: httpx.Client) -> None:
    for path in ("/v1/models", "/api/tags", "/api/version", "/v1/knowledge/fuzz/documents"):
        resp = http.get(path)
        assert resp.status_code == 200, resp.text
        json.loads(resp.content)
