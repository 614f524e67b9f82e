"""Documents in, search out, over HTTP against a real PostgreSQL + pgvector."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import Gateway

DOCS = [
    {"id": "heat-pump.md", "text": "# Heat pump\n\nThe heat pump moves warmth from the outdoor air into the house. "
     "It stays efficient down to about minus fifteen degrees.", "metadata": {"room": "utility"}},
    {"id": "sourdough.md", "text": "# Sourdough\n\nFeed the starter with flour and water every day. "
     "Bake the loaf in a very hot oven with steam.", "metadata": {"room": "kitchen"}},
    {"id": "router.md", "text": "# Network\n\nThe router's admin page is at 192.168.1.1 and the guest "
     "network is called OAKWIFI.", "metadata": {}},
]


def call(gw: Gateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{gw.base_url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def search(gw: Gateway, ws: str, query: str, **kw: Any) -> list[dict[str, Any]]:
    status, body = call(gw, "POST", f"/knowledge/{ws}/search", {"query": query, **kw})
    assert status == 200, body
    return list(body["data"])


def test_ingest_is_idempotent_and_a_change_replaces_the_chunks(rag_gateway: Gateway, workspace: str) -> None:
    status, body = call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS)
    assert status == 201 and [d["status"] for d in body["data"]] == ["created"] * 3
    assert all(d["chunks"] >= 1 for d in body["data"])
    status, body = call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS)
    assert status == 200 and [d["status"] for d in body["data"]] == ["unchanged"] * 3
    assert all(d["chunks"] == 0 for d in body["data"])  # nothing was written again

    changed = {"id": "router.md", "text": "# Network\n\nThe mesh router now lives in the attic; its password is on the fridge."}
    status, body = call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", changed)
    assert body["data"][0]["status"] == "updated"
    texts = " ".join(h["content"] for h in search(rag_gateway, workspace, "router", mode="text", top_k=10))
    assert "attic" in texts and "OAKWIFI" not in texts


def test_list_and_delete(rag_gateway: Gateway, workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", {"documents": DOCS})
    status, body = call(rag_gateway, "GET", f"/knowledge/{workspace}/documents")
    assert status == 200 and [d["id"] for d in body["data"]] == ["heat-pump.md", "router.md", "sourdough.md"]
    assert body["data"][0]["metadata"] == {"room": "utility"}
    assert call(rag_gateway, "DELETE", f"/knowledge/{workspace}/documents/sourdough.md")[0] == 200
    status, body = call(rag_gateway, "DELETE", f"/knowledge/{workspace}/documents/sourdough.md")
    assert status == 404 and body["error"]["code"] == "not_found"
    hits = search(rag_gateway, workspace, "bread starter flour", mode="hybrid", top_k=10)
    assert all(h["document_id"] != "sourdough.md" for h in hits)


def test_dense_finds_a_paraphrase_and_text_finds_the_exact_word(rag_gateway: Gateway, workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS)
    dense = search(rag_gateway, workspace, "how do I make bread rise", mode="dense", top_k=1)
    assert dense[0]["document_id"] == "sourdough.md" and 0 < dense[0]["scores"]["dense"] <= 1
    text = search(rag_gateway, workspace, "OAKWIFI", mode="text", top_k=3)
    assert [h["document_id"] for h in text] == ["router.md"] and text[0]["scores"]["text"] > 0
    hybrid = search(rag_gateway, workspace, "guest wifi name", mode="hybrid", top_k=3)
    assert hybrid[0]["document_id"] == "router.md" and "rrf" in hybrid[0]["scores"]
    assert hybrid[0]["metadata"] == {} and hybrid[0]["chunk_index"] == 0


def test_rerank_orders_by_relevance_and_reports_its_scores(rag_gateway: Gateway, workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS)
    hits = search(rag_gateway, workspace, "is the heat pump efficient when it is cold outside", rerank=True, top_k=3)
    assert hits[0]["document_id"] == "heat-pump.md"
    scores = [h["scores"]["rerank"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_workspaces_are_isolated(rag_gateway: Gateway, workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}-a/documents", DOCS[:1])
    assert search(rag_gateway, f"{workspace}-b", "heat pump", mode="hybrid") == []


def test_bad_input_is_400_with_param(rag_gateway: Gateway, workspace: str) -> None:
    cases = [
        ("POST", f"/knowledge/{workspace}/search", {"query": ""}, "query"),
        ("POST", f"/knowledge/{workspace}/search", {"query": "x", "mode": "fuzzy"}, "mode"),
        ("POST", f"/knowledge/{workspace}/search", {"query": "x", "top_k": 0}, "top_k"),
        ("POST", f"/knowledge/{workspace}/documents", {"id": "a"}, "documents[0].text"),
        ("POST", f"/knowledge/{workspace}/documents", {"id": 5, "text": "x"}, "documents[0].id"),
        ("POST", "/knowledge/bad%20name/search", {"query": "x"}, "workspace"),
    ]
    for method, path, body, param in cases:
        status, answer = call(rag_gateway, method, path, body)
        assert status == 400 and answer["error"]["param"] == param, (path, body, answer)


def test_a_metadata_change_alone_updates_in_place_without_embedding_again(rag_gateway: Gateway,
                                                                           workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS[0])
    moved = {**DOCS[0], "metadata": {"room": "cellar"}}
    status, body = call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", moved)
    assert status == 200 and body["data"] == [{"id": "heat-pump.md", "status": "updated", "chunks": 0}]
    assert call(rag_gateway, "GET", f"/knowledge/{workspace}/documents")[1]["data"][0]["metadata"] == {"room": "cellar"}
    assert search(rag_gateway, workspace, "heat pump", mode="text")[0]["metadata"] == {"room": "cellar"}
    assert call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", moved)[1]["data"][0]["status"] == "unchanged"


def test_text_search_takes_any_characters_and_ranks_the_rarer_word_higher(rag_gateway: Gateway,
                                                                           workspace: str) -> None:
    call(rag_gateway, "POST", f"/knowledge/{workspace}/documents", DOCS)
    assert search(rag_gateway, workspace, "O'Brien's | & ! path:1 (router)", mode="text")[0]["document_id"] == "router.md"
    assert search(rag_gateway, workspace, "the of and", mode="text") == []  # stop words only
    hits = search(rag_gateway, workspace, "oven heat", mode="text", top_k=3)
    assert {h["document_id"] for h in hits} == {"sourdough.md", "heat-pump.md"}
