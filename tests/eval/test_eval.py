"""`appliance eval`: the labelled set under tests/eval through the real pipeline against the
fake LLM, which echoes the context it was sent, so an answer holds a phrase only when
retrieval found its document. A change to the prompt or to retrieval that loses a document
from the top two fails this test (and so the build)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.evaluation import Case, judge, load_set, summarise
from tests import procs
from tests.conftest import FakeLLM, catalog_for

HERE = Path(__file__).parent


def run_eval(tmp: Path, llm: FakeLLM, pg_url: str, set_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp / "catalog.toml").write_text(catalog_for(llm.port))
    env = procs.child_env(APPLIANCE_STATE_DIR=str(tmp / "state"), APPLIANCE_DATABASE_URL=pg_url,
                          APPLIANCE_KNOWLEDGE__RAG_TOP_K="2")
    return subprocess.run([sys.executable, "-m", "appliance", "eval", "--config", str(tmp / "catalog.toml"),
                           "--set", str(set_path), "--docs", str(HERE / "docs"), "--workspace", "eval-suite", *extra],
                          env=env, capture_output=True, text=True, timeout=240)


def test_the_set_passes_through_the_real_pipeline(tmp_path: Path, llm: FakeLLM, migrated_pg: str) -> None:
    llm.control(echo_context=True)
    done = run_eval(tmp_path, llm, migrated_pg, HERE / "set.jsonl", "--model", "coder")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "PASS"
    assert lines[-2].startswith("retrieval recall 1.000 (min 0.90), answers passing 1.000 (min 0.90), 6 cases")
    assert "prompt rag-answer@1" in lines[-2]
    asked = [r for r in llm.requests() if r.get("messages")]
    assert len(asked) == 6 and all(r["model"] == "fake-model" for r in asked)  # `coder` is fake-model upstream


def test_a_set_the_pipeline_cannot_answer_fails_with_exit_code_1(tmp_path: Path, llm: FakeLLM,
                                                                 migrated_pg: str) -> None:
    llm.control(echo_context=True)
    (tmp_path / "bad.jsonl").write_text(
        '{"question": "Where are the winter tyres stored?", "sources": ["car.md"], "contains": ["Birch Lane"]}\n'
        '{"question": "Where are the winter tyres stored?", "sources": ["router.md"], "contains": ["OAKWIFI"]}\n')
    done = run_eval(tmp_path, llm, migrated_pg, tmp_path / "bad.jsonl", "--min-recall", "0.9")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[-1] == "FAIL" and out[0].startswith("ok") and out[1].startswith("FAIL")
    assert "not retrieved: router.md" in out[1] and "answer lacks: 'OAKWIFI'" in out[1]
    assert out[-2].startswith("retrieval recall 0.500")


def test_scoring_counts_each_expected_source_and_phrase(tmp_path: Path) -> None:
    results = [judge(Case("q1", ("a", "b"), ("Alpha",)), ("a", "c"), "the alpha answer"),
               judge(Case("q2", ("c",), ()), ("c",), ""),
               judge(Case("q3", (), ("x",)), (), "", error="BackendUnavailable: down")]
    summary = summarise(results, 0.6, 0.5)
    assert (summary.recall, round(summary.answer_rate, 3), summary.passed) == (2 / 3, 0.667, True)
    assert [r.passed for r in results] == [False, True, False]
    (tmp_path / "set.toml").write_text('[[case]]\nquestion = "q"\nsources = ["a"]\ncontains = ["b"]\n')
    assert load_set(tmp_path / "set.toml") == [Case("q", ("a",), ("b",))]
