"""`appliance eval --set FILE`: a labelled question set through the real RAG pipeline.

Each case is a question, the document ids retrieval should find (`sources`) and phrases the
answer must contain (`contains`, case-insensitive). The set runs through the same
`ChatService` the gateway serves with (catalog, backends, retrieval, the chosen prompt,
recording), against the configured backend: the fake LLM in CI, a real model locally. It
prints one line per case, retrieval recall over all expected sources, the share of cases
whose answer passed its checks, and PASS or FAIL against the thresholds (exit code 1).

A set is JSON lines (one case per line, `#` lines ignored) or TOML (`[[case]]` tables):

    {"question": "What is the guest wifi called?", "sources": ["router.md"], "contains": ["OAKWIFI"]}

`--docs DIR` ingests a directory into the workspace first (idempotent), so a set can ship
with its own documents (tests/eval/).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import ConfigError, Settings
from appliance.domain.chat import ChatService
from appliance.domain.chat_request import ChatRequest
from appliance.domain.knowledge import check_workspace


@dataclass(frozen=True, slots=True)
class Case:
    question: str
    sources: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    workspace: str | None = None


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    retrieved: tuple[str, ...]
    answer: str
    prompt: str | None = None
    error: str | None = None
    found: tuple[str, ...] = field(default=())
    missing_phrases: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return self.error is None and not self.missing_phrases and len(self.found) == len(self.case.sources)


def _case(raw: Any, where: str) -> Case:
    if not isinstance(raw, dict) or not isinstance(raw.get("question"), str) or not raw["question"].strip():
        raise ConfigError(f"eval set error: {where}: a case needs a non-empty 'question'")
    lists = {}
    for key in ("sources", "contains"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"eval set error: {where}.{key}: a list of strings")
        lists[key] = tuple(value)
    workspace = raw.get("workspace")
    if workspace is not None and not isinstance(workspace, str):
        raise ConfigError(f"eval set error: {where}.workspace: a string")
    return Case(raw["question"], lists["sources"], lists["contains"], workspace)


def load_set(path: Path) -> list[Case]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"eval set error: {path}: {exc.strerror or exc}") from exc
    if path.suffix == ".toml":
        try:
            cases = tomllib.loads(text).get("case", [])
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"eval set error: {path}: {exc}") from exc
        out = [_case(c, f"{path.name} case[{i}]") for i, c in enumerate(cases)]
    else:
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"eval set error: {path.name}:{n}: not JSON ({exc})") from exc
            out.append(_case(raw, f"{path.name}:{n}"))
    if not out:
        raise ConfigError(f"eval set error: {path}: no cases")
    return out


def judge(case: Case, retrieved: tuple[str, ...], answer: str, prompt: str | None = None,
          error: str | None = None) -> CaseResult:
    lowered = answer.lower()
    return CaseResult(case, retrieved, answer, prompt, error,
                      found=tuple(s for s in case.sources if s in retrieved),
                      missing_phrases=tuple(p for p in case.contains if p.lower() not in lowered))


async def ask(chat: ChatService, case: Case, workspace: str, model: str, prompt: str | None,
              index: int) -> CaseResult:
    """One case through plan (retrieval, prompt) and complete (the backend), as a request would."""
    ws = case.workspace or workspace
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": case.question}],
                            "stream": False}
    req = ChatRequest(body, model, False, f"eval-{index}", workspace=ws, prompt=prompt)
    try:
        plan = await chat.plan(req)
        reply = await chat.complete(req, plan)
    except Exception as exc:  # one failing case is a failed case, not a failed run
        return judge(case, (), "", None, f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
    choices = reply.body.get("choices") or [{}]
    answer = (choices[0].get("message") or {}).get("content") or ""
    return judge(case, plan.sources, answer, plan.prompt.ref if plan.prompt else None)


@dataclass(frozen=True, slots=True)
class Summary:
    recall: float
    answer_rate: float
    passed: bool


def summarise(results: list[CaseResult], min_recall: float, min_answers: float) -> Summary:
    expected = sum(len(r.case.sources) for r in results)
    recall = sum(len(r.found) for r in results) / expected if expected else 1.0
    answered = [r for r in results if r.error is None and not r.missing_phrases]
    rate = len(answered) / len(results) if results else 0.0
    return Summary(recall, rate, recall >= min_recall and rate >= min_answers)


def report(results: list[CaseResult], summary: Summary, min_recall: float, min_answers: float) -> str:
    lines = []
    for i, r in enumerate(results, start=1):
        mark = "ok  " if r.passed else "FAIL"
        why = []
        if r.error:
            why.append(r.error)
        if len(r.found) < len(r.case.sources):
            why.append("not retrieved: " + ", ".join(s for s in r.case.sources if s not in r.found))
        if r.missing_phrases:
            why.append("answer lacks: " + ", ".join(repr(p) for p in r.missing_phrases))
        lines.append(f"{mark} {i:3d}. {r.case.question[:60]}" + (f"  ({'; '.join(why)})" if why else ""))
    prompts = sorted({r.prompt for r in results if r.prompt})
    lines.append(f"retrieval recall {summary.recall:.3f} (min {min_recall:.2f}), answers passing "
                 f"{summary.answer_rate:.3f} (min {min_answers:.2f}), {len(results)} cases"
                 + (f", prompt {', '.join(prompts)}" if prompts else ""))
    lines.append("PASS" if summary.passed else "FAIL")
    return "\n".join(lines)


async def _run(settings: Settings, cases: list[Case], *, workspace: str, model: str | None,
               prompt: str | None, docs: Path | None) -> list[CaseResult]:
    from appliance.rag.ingest import ingest_files
    from appliance.services import build_services

    services = build_services(settings)
    await services.start()
    try:
        if services.knowledge is None:
            raise ConfigError("config error: eval needs knowledge: APPLIANCE_DATABASE_URL (or the embedded server)")
        if docs is not None:
            await ingest_files(services.knowledge, workspace, [docs], progress=False)
        chosen = model or next((m.id for m in settings.catalog.models), None)
        if chosen is None:
            raise ConfigError("config error: eval needs --model or a [[models]] entry in the catalog")
        return [await ask(services.chat, case, workspace, chosen, prompt, i) for i, case in enumerate(cases)]
    finally:
        await services.aclose()


def run(settings: Settings, set_path: Path, *, workspace: str, model: str | None, prompt: str | None,
        docs: Path | None, min_recall: float, min_answers: float) -> int:
    from appliance.db.migrate import migrate
    from appliance.embedded.postgres import database_url
    from appliance.inference.model_files import embedding_dim

    cases = load_set(set_path)
    check_workspace(workspace)
    url, server = database_url(settings)
    try:
        # No events from an eval: its chats are not anyone's traffic.
        settings = settings.model_copy(update={"database_url": url, "nats_url": None})
        migrate(url, {"embedding_dim": embedding_dim(settings)})
        results = asyncio.run(_run(settings, cases, workspace=workspace, model=model, prompt=prompt, docs=docs))
    finally:
        if server is not None:
            server.stop()
    summary = summarise(results, min_recall, min_answers)
    print(report(results, summary, min_recall, min_answers))
    sys.stdout.flush()
    return 0 if summary.passed else 1
