"""`appliance ingest PATH... --workspace W`: files and directories into a workspace, with a
progress bar and a final count. Unchanged files write nothing (content hash)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from appliance.config import Settings
from appliance.db.migrate import migrate
from appliance.domain.knowledge import KnowledgeService, check_workspace
from appliance.embedded.postgres import database_url
from appliance.inference.model_files import embedding_dim
from appliance.inference.wiring import Inference
from appliance.rag.documents import SUPPORTED, collect, read_text
from appliance.rag.wiring import knowledge_service, knowledge_store


async def ingest_files(service: KnowledgeService, workspace: str, paths: list[Path], *,
                       progress: bool = True) -> Counter[str]:
    """Put every supported file into `workspace`; returns counts by status (and chunks)."""
    check_workspace(workspace)
    files = list(collect(paths))
    counts: Counter[str] = Counter()
    with tqdm(files, unit="file", disable=not progress, file=sys.stderr) as bar:
        for document_id, path in bar:
            bar.set_postfix_str(document_id[-40:], refresh=False)
            text = read_text(path)
            if not text.strip():
                counts["empty"] += 1
                continue
            result = await service.put_document(workspace, document_id, text, {"source": str(path)})
            counts[result.status] += 1
            counts["chunks"] += result.chunks
    return counts


async def _run(settings: Settings, paths: list[Path], workspace: str) -> Counter[str]:
    inference = Inference(settings)
    await inference.start()
    store = knowledge_store(settings)
    service = knowledge_service(settings, store, inference.embedder, None)
    await store.open()
    try:
        return await ingest_files(service, workspace, paths, progress=sys.stderr.isatty())
    finally:
        await store.close()
        await inference.close()


def run(settings: Settings, paths: list[Path], workspace: str) -> int:
    url, server = database_url(settings)
    try:
        settings = settings.model_copy(update={"database_url": url})
        migrate(url, {"embedding_dim": embedding_dim(settings)})
        counts = asyncio.run(_run(settings, paths, workspace))
    finally:
        if server is not None:
            server.stop()
    files = counts["created"] + counts["updated"] + counts["unchanged"]
    print(f"ingested {files} files into '{workspace}': {counts['created']} new, {counts['updated']} changed, "
          f"{counts['unchanged']} unchanged, {counts['chunks']} chunks written"
          + (f", {counts['empty']} empty skipped" if counts["empty"] else "")
          + f" (types: {', '.join(sorted(SUPPORTED))})")
    return 0
