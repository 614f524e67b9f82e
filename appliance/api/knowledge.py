"""/v1/knowledge/{workspace}/documents and /search: thin responders over KnowledgeService."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.api.access import caller_of
from appliance.api.body import read_json
from appliance.api.unavailable import Unavailable
from appliance.domain.errors import InvalidRequest, NotFound
from appliance.domain.knowledge import MODES, Hit, KnowledgeService
from appliance.wire.bounds import check_depth, check_text, has_nul

MAX_DOCUMENTS_PER_REQUEST = 256
# Metadata rides along on every chunk row and every search hit: labels and a source, not a
# payload. Unbounded, a document nested past 254 levels was stored and then broke every
# listing and search of its workspace (orjson writes no deeper).
MAX_METADATA_DEPTH = 16
MAX_METADATA_BYTES = 16 * 1024
MAX_OFFSET = 2**63 - 1  # PostgreSQL's bigint


def _json(resp: falcon.asgi.Response, body: Any, status: int = 200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(body)


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], param: str, default: Any = None) -> Any:
    value = obj.get(name, default)
    if value is None and default is None:
        raise InvalidRequest(f"'{name}' is required", param=param)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidRequest(f"'{name}' has the wrong type", param=param)
    if isinstance(value, str):
        check_text(value, param)
    return value


def _document(doc: Any, param: str) -> tuple[str, str, dict[str, Any]]:
    """A document's id, text and metadata, checked before anything of the request is written."""
    if not isinstance(doc, dict):
        raise InvalidRequest("each document must be an object", param=param)
    document_id, text = _field(doc, "id", str, f"{param}.id"), _field(doc, "text", str, f"{param}.text")
    metadata = _field(doc, "metadata", dict, f"{param}.metadata", {})
    check_depth(metadata, MAX_METADATA_DEPTH, f"{param}.metadata")
    if has_nul(metadata):
        raise InvalidRequest("'metadata' must not contain NUL characters", param=f"{param}.metadata")
    if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes as JSON", param=f"{param}.metadata")
    return document_id, text, metadata


def hit_json(hit: Hit) -> dict[str, Any]:
    return {"document_id": hit.document_id, "chunk_index": hit.chunk_index, "content": hit.content,
            "metadata": hit.metadata, "scores": hit.scores}


class DocumentsResource:
    def __init__(self, service: KnowledgeService) -> None:
        self._service = service

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, workspace: str) -> None:
        body = await read_json(req)
        docs = body if isinstance(body, list) else body.get("documents", [body]) if isinstance(body, dict) else None
        if not isinstance(docs, list) or not docs or len(docs) > MAX_DOCUMENTS_PER_REQUEST:
            raise InvalidRequest(f"send a document object or a list of 1-{MAX_DOCUMENTS_PER_REQUEST}", param="documents")
        checked = [_document(doc, f"documents[{i}]") for i, doc in enumerate(docs)]
        results = [{"id": r.document_id, "status": r.status, "chunks": r.chunks}
                   for r in await self._service.put_documents(workspace, checked)]
        created = any(r["status"] == "created" for r in results)
        _json(resp, {"object": "list", "data": results}, 201 if created else 200)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, workspace: str) -> None:
        limit = req.get_param_as_int("limit", min_value=1, max_value=1000, default=100)
        offset = req.get_param_as_int("offset", min_value=0, max_value=MAX_OFFSET, default=0)
        docs = await self._service.list_documents(workspace, limit, offset)
        _json(resp, {"object": "list", "data": [
            {"id": d.document_id, "chunks": d.chunk_count, "chars": d.chars, "content_hash": d.content_hash,
             "metadata": d.metadata, "updated_at": d.updated_at} for d in docs]})

    async def on_delete_one(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, workspace: str,
                            document_id: str) -> None:
        if not await self._service.delete_document(workspace, check_text(document_id, "id")):
            raise NotFound(f"No document '{document_id}' in workspace '{workspace}'", param="id")
        _json(resp, {"id": document_id, "object": "document", "deleted": True})


class WorkspacesResource:
    """GET /v1/knowledge: the workspaces that hold documents, with their counts (for a key
    limited to some workspaces, those)."""

    def __init__(self, service: KnowledgeService) -> None:
        self._service = service

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        limit = req.get_param_as_int("limit", min_value=1, max_value=10000, default=1000)
        allowed = caller_of(req).workspaces
        _json(resp, {"object": "list", "data": [
            {"workspace": w.workspace, "documents": w.documents, "chunks": w.chunks, "updated_at": w.updated_at}
            for w in await self._service.list_workspaces(limit) if not allowed or w.workspace in allowed]})


class SearchResource:
    def __init__(self, service: KnowledgeService) -> None:
        self._service = service

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, workspace: str) -> None:
        body = await read_json(req)
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object")
        top_k = _field(body, "top_k", int, "top_k", 5)
        if not 1 <= top_k <= 100:
            raise InvalidRequest("'top_k' must be from 1 to 100", param="top_k")
        mode = _field(body, "mode", str, "mode", "hybrid")
        if mode not in MODES:
            raise InvalidRequest(f"'mode' must be one of {list(MODES)}", param="mode")
        rerank = _field(body, "rerank", bool, "rerank", False)
        hits = await self._service.search(workspace, _field(body, "query", str, "query"), top_k=top_k,
                                                     mode=mode, rerank=rerank, correlation_id=req.context.cid)
        _json(resp, {"object": "list", "mode": mode, "reranked": rerank, "data": [hit_json(h) for h in hits]})


def add_routes(app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response],
               service: KnowledgeService | None) -> None:
    documents: Any = DocumentsResource(service) if service else Unavailable(
        "knowledge is not configured: set APPLIANCE_DATABASE_URL (or run `appliance up`)")
    search: Any = SearchResource(service) if service else documents
    workspaces: Any = WorkspacesResource(service) if service else documents
    app.add_route("/v1/knowledge", workspaces)
    app.add_route("/v1/knowledge/{workspace}/documents", documents)
    app.add_route("/v1/knowledge/{workspace}/documents/{document_id}", documents, suffix="one")
    app.add_route("/v1/knowledge/{workspace}/search", search)
