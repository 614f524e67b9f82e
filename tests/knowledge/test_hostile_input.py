"""What used to answer 500 on the knowledge API (issue 13) is refused with 400 in the OpenAI
error shape, and leaves the workspace working: over HTTP, on a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from appliance.api.knowledge import MAX_METADATA_BYTES, MAX_METADATA_DEPTH
from appliance.domain.errors import InvalidRequest
from appliance.rag.store import PgKnowledgeStore
from tests.conftest import Gateway
from tests.unit.test_wire_bounds import nested

DOC = {"id": "heat-pump.md", "text": "The heat pump moves warmth from the outdoor air into the house."}


@pytest.fixture
def http(rag_gateway: Gateway) -> Any:
    with httpx.Client(base_url=f"{rag_gateway.base_url}/knowledge", timeout=30) as client:
        yield client


def refused(resp: httpx.Response, param: str | None = None) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error


def still_works(http: httpx.Client, workspace: str) -> None:
    assert http.get(f"/{workspace}/documents").status_code == 200
    assert http.post(f"/{workspace}/search", json={"query": "heat pump"}).status_code == 200


@pytest.mark.parametrize(("doc", "param"), [
    ({**DOC, "id": "a\x00b"}, "documents[0].id"),
    ({**DOC, "text": "warm\x00th"}, "documents[0].text"),
    ({**DOC, "metadata": {"room": "util\x00ity"}}, "documents[0].metadata"),
    ({**DOC, "metadata": {"ro\x00om": "utility"}}, "documents[0].metadata"),
])
def test_nul_in_a_document_is_refused(http: httpx.Client, workspace: str, doc: dict[str, Any], param: str) -> None:
    refused(http.post(f"/{workspace}/documents", json=doc), param)
    still_works(http, workspace)


def test_nothing_of_a_refused_batch_is_written(http: httpx.Client, workspace: str) -> None:
    refused(http.post(f"/{workspace}/documents", json=[DOC, {**DOC, "id": "b\x00"}]), "documents[1].id")
    assert http.get(f"/{workspace}/documents").json()["data"] == []


def test_nul_in_a_search_query_or_a_deleted_id_is_refused(http: httpx.Client, workspace: str) -> None:
    http.post(f"/{workspace}/documents", json=DOC)
    refused(http.post(f"/{workspace}/search", json={"query": "heat\x00pump"}), "query")
    refused(http.delete(f"/{workspace}/documents/heat%00pump.md"), "id")
    refused(http.get("/ws%00/documents"), "workspace")
    refused(http.get("/ws%0A/documents"), "workspace")  # `$` let a trailing newline through
    still_works(http, workspace)


@pytest.mark.parametrize("offset", ["99999999999999999999", str(2**63)])
def test_an_offset_past_bigint_is_refused(http: httpx.Client, workspace: str, offset: str) -> None:
    resp = http.get(f"/{workspace}/documents", params={"offset": offset})
    refused(resp)
    assert '"offset"' in resp.json()["error"]["message"]  # falcon's own refusal: no `param`
    assert http.get(f"/{workspace}/documents", params={"offset": str(2**63 - 1)}).json()["data"] == []


@pytest.mark.parametrize("top_k", [101, 2**63, 2**64 - 1, 99999999999999999999, 1e300])
def test_a_large_top_k_is_refused(http: httpx.Client, workspace: str, top_k: Any) -> None:
    refused(http.post(f"/{workspace}/search", content=f'{{"query": "heat", "top_k": {top_k}}}',
                      headers={"content-type": "application/json"}), "top_k")


def test_deep_metadata_is_refused_and_leaves_the_workspace_listable(http: httpx.Client, workspace: str) -> None:
    # Used to be a 201, after which listing and searching the workspace answered 500 for everyone.
    refused(http.post(f"/{workspace}/documents", json={**DOC, "metadata": {"a": nested(300)}}), "documents[0].metadata")
    refused(http.post(f"/{workspace}/documents", json={**DOC, "metadata": nested(MAX_METADATA_DEPTH + 1, "object")}),
            "documents[0].metadata")
    ok = http.post(f"/{workspace}/documents", json={**DOC, "metadata": nested(MAX_METADATA_DEPTH, "object")})
    assert ok.status_code == 201, ok.text
    still_works(http, workspace)


def test_big_metadata_is_refused(http: httpx.Client, workspace: str) -> None:
    refused(http.post(f"/{workspace}/documents", json={**DOC, "metadata": {"x": "y" * MAX_METADATA_BYTES}}),
            "documents[0].metadata")
    assert http.post(f"/{workspace}/documents", json={**DOC, "metadata": {"x": "y" * 1000}}).status_code == 201


def test_rag_chat_with_nul_in_the_question_is_answered(rag_gateway: Gateway, workspace: str, http: httpx.Client) -> None:
    http.post(f"/{workspace}/documents", json=DOC)
    resp = httpx.post(f"{rag_gateway.base_url}/chat/completions", headers={"x-workspace": workspace}, timeout=30,
                      json={"model": "coder", "messages": [{"role": "user", "content": "heat\x00pump?"}]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-appliance-route"] == "rag"


async def test_the_store_turns_data_postgres_refuses_into_invalid_request(migrated_pg: str) -> None:
    store = PgKnowledgeStore(migrated_pg, max_size=1)
    await store.open()
    try:
        with pytest.raises(InvalidRequest, match="NUL"):
            await store.document_state("ws", "a\x00b")
        with pytest.raises(InvalidRequest, match="bigint"):
            await store.list_documents("ws", 10, 2**63)
        assert await store.list_documents("ws", 10, 0) == []  # the connection is still good
    finally:
        await store.close()
