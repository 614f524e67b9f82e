"""A real corpus for the knowledge benchmarks: this machine's man pages as plain text, and
queries a user would type, taken from each page's NAME line.

- Documents: pages of sections 1, 5, 7 and 8 (not symlinks), rendered by `man` at 100
  columns (cached under ~/.cache/appliance-bench/man), plus `gcloud compute` commands in
  their GA, beta and alpha versions: near-duplicates by construction (same text, a few flags
  apart), beside the families of near-identical pages the system already has (llvm-*,
  openssl-*, git-*, perf-*, systemd-*). Each text is cut at `max_chars` (default 8,000) so
  that a benchmark run embeds ~7k chunks instead of ~30k on a shared 2-core machine; the NAME
  line is at the top, so every query stays answerable.
- Queries: the NAME line's description ("ls - list directory contents" -> "list directory
  contents"), pages whose description has fewer than three words left out. The pages with
  the same description (gcloud's three versions, llvm tools that share one) are all
  relevant to it: nothing in the question tells them apart.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MAN = Path("/usr/share/man")
_NAME = re.compile(r"^NAME\s*\n\s+(.+?)\n\s*\n", re.S | re.M)


@dataclass(frozen=True)
class Query:
    text: str
    relevant: frozenset[str]


def pages() -> list[Path]:
    out = [p for sec in ("man1", "man5", "man7", "man8") if (MAN / sec).is_dir()
           for p in sorted((MAN / sec).iterdir()) if not p.name.startswith("gcloud") and not p.is_symlink()]
    compute = sorted((MAN / "man1").glob("gcloud_compute_*.1.gz"))
    for page in compute[:: max(1, len(compute) // 60)][:60]:
        out.append(page)
        out.extend(q for v in ("beta", "alpha")
                   if (q := page.with_name(page.name.replace("gcloud_", f"gcloud_{v}_", 1))).exists())
    return out


def _render(page: Path, cache: Path) -> Path | None:
    dest = cache / page.parent.name / (page.name.removesuffix(".gz") + ".txt")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MANWIDTH="100", LANG="C.UTF-8")
        out = subprocess.run(f"man --no-hyphenation --no-justification -l '{page}' 2>/dev/null | col -bx",
                             shell=True, env=env, capture_output=True, check=False).stdout
        dest.write_bytes(out)
    return dest if dest.stat().st_size > 200 else None


def corpus(cache: Path, *, max_chars: int = 8000, limit: int = 0) -> dict[str, str]:
    """document id (section/page) -> text; rendering the ~2,100 pages takes a few minutes once."""
    found = pages()
    with ThreadPoolExecutor(2) as pool:
        rendered = [p for p in pool.map(lambda p: _render(p, cache), found) if p is not None]
    docs = {f"{p.parent.name}/{p.stem}": p.read_text(errors="replace")[:max_chars] for p in rendered}
    if limit:  # every gcloud version kept (the near-duplicates), the other pages sampled evenly
        near = sorted(k for k in docs if "gcloud" in k)
        rest = sorted(k for k in docs if "gcloud" not in k)
        keep = near + rest[:: max(1, len(rest) // max(1, limit - len(near)))][: max(0, limit - len(near))]
        docs = {k: docs[k] for k in sorted(keep)}
    return docs


def description(text: str) -> str | None:
    match = _NAME.search(text)
    if not match:
        return None
    line = " ".join(match.group(1).split())
    for sep in (" - ", " -- ", " — "):
        if sep in line:
            desc = line.split(sep, 1)[1].strip().rstrip(".")
            return desc if len(desc.split()) >= 3 else None
    return None


def queries(docs: dict[str, str]) -> list[Query]:
    by_desc: dict[str, set[str]] = defaultdict(set)
    for doc_id, text in docs.items():
        desc = description(text)
        if desc:
            by_desc[desc.lower()].add(doc_id)
    first = {}
    for doc_id in sorted(docs):
        desc = description(docs[doc_id])
        if desc and desc.lower() not in first:
            first[desc.lower()] = desc
    return [Query(first[key], frozenset(ids)) for key, ids in sorted(by_desc.items())]
