"""`appliance ingest PATH... --workspace W`: files and directories into a workspace, with a
progress bar and a final count. Unchanged files write nothing (content hash)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from appliance.config import Settings
from appliance.db.migrate import migrate
from appliance.domain.knowledge import KnowledgeService, check_workspace
from appliance.embedded.postgres import database_url
from appliance.inference.model_files import embedding_dim
from appliance.inference.wiring import Inference
from appliance.rag.documents import SUPPORTED, collect, read_text
from appliance.rag.wiring import knowledge_service, knowledge_store

FILES_PER_BATCH: Final = 64
CHARS_PER_BATCH: Final = 512 * 1024  # about 500 chunks of man-page text: two of the service's batches


async def ingest_files(service: KnowledgeService, workspace: str, paths: list[Path], *,
                       progress: bool = True) -> Counter[str]:
    """Put every supported file into `workspace`; returns counts by status (and chunks).
    Files go to the service in groups (its batches span documents); the bar moves per group
    and shows chunks/s."""
    check_workspace(workspace)
    files = list(collect(paths))
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    with tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr) as bar:
        for group in _groups(files, counts):
            results = await service.put_documents(workspace, group)
            for result in results:
                counts[result.status] += 1
                counts["chunks"] += result.chunks
            bar.set_postfix_str(f"{counts['chunks'] / (time.perf_counter() - started):.1f} chunks/s", refresh=False)
            bar.update(len(results))
    counts["seconds"] = round(time.perf_counter() - started)
    return counts


def _groups(files: list[tuple[str, Path]], counts: Counter[str]
            ) -> Iterator[list[tuple[str, str, Mapping[str, Any]]]]:
    group: list[tuple[str, str, Mapping[str, Any]]] = []
    chars = 0
    for document_id, path in files:
        text = read_text(path)
        if not text.strip():
            counts["empty"] += 1
            continue
        group.append((document_id, text, {"source": str(path)}))
        chars += len(text)
        if len(group) >= FILES_PER_BATCH or chars >= CHARS_PER_BATCH:
            yield group
            group, chars = [], 0
    if group:
        yield group


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
          + (f", {counts['chunks'] / max(counts['seconds'], 1):.0f} chunks/s" if counts["chunks"] else "")
          + f" (types: {', '.join(sorted(SUPPORTED))})")
    return 0
