"""Web UI benchmark: what the Ask page weighs over the wire, and how long a person waits
for the first answer token in the browser beside the same request over the API.

    python tests/perf/bench_ui.py [--runs 20] [--delay-ms 0]

Starts the fake LLM, an embedded PostgreSQL (temporary), and one gateway (one worker) with
knowledge; ingests tests/eval/docs into a workspace. Then:

- page weight: Debian's chromium (Playwright, headless) loads /ui/ with an empty cache; every
  response of the load is summed as Playwright reports it (headers + body as transferred,
  gzip where the browser asked for it), the shell's files and the API calls the Ask page
  makes before it is usable (/v1/models, /v1/knowledge) listed apart. The same files
  uncompressed are the second column.
- first token: the same RAG question (hybrid search + rerank over the workspace, then the
  fake LLM streaming, `delay_ms` before each token) asked `--runs` times, alternating:
  in the browser, from the Ask button's submit handler to the first content delta read from
  the stream (the page's own `performance.now()`, kept in `data-first-token-ms`), and over
  the API with a raw HTTP/1.1 client sending the same headers (x-workspace,
  x-appliance-passages), from sending the request to the first SSE `data:` event holding
  content. Medians, p90 and the ratio browser / API.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.db.migrate import migrate
from appliance.embedded.postgres import EmbeddedPostgres
from tests import procs
from tests.conftest import EMBEDDING_DIM, catalog_for, start_gateway

DOCS = Path(__file__).parents[1] / "eval" / "docs"
WORKSPACE = "bench-ui"
QUESTION = "What was I stuck on in March?"


def post(url: str, body: Any) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=120).read()


def api_first_token(port: int) -> float:
    body = json.dumps({"model": "coder", "stream": True, "messages": [{"role": "user", "content": QUESTION}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json", "x-workspace": WORKSPACE,
                                                        "x-appliance-passages": "true"})
    resp = conn.getresponse()
    first = None
    buffer = b""
    while first is None:
        piece = resp.read1(65536)
        if not piece:
            break
        buffer += piece
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            data = b"".join(line[6:] for line in event.split(b"\n") if line.startswith(b"data: "))
            if data and data != b"[DONE]" and b'"choices"' in data:
                delta = (json.loads(data).get("choices") or [{}])[0].get("delta") or {}
                if delta.get("content"):
                    first = (time.perf_counter() - started) * 1000
                    break
    resp.read()
    conn.close()
    assert first is not None
    return first


def page_weight(browser: Any, url: str) -> list[tuple[str, int, int]]:
    context = browser.new_context()
    page = context.new_page()
    seen: list[Any] = []
    page.on("requestfinished", lambda request: seen.append(request))
    page.goto(f"{url}/ui/", wait_until="networkidle")
    page.get_by_role("combobox", name="Model").locator("option").first.wait_for(state="attached")
    rows = []
    for request in seen:
        sizes = request.sizes()
        response = request.response()
        body = response.body() if response else b""
        rows.append((request.url.replace(url, ""), sizes["responseHeadersSize"] + sizes["responseBodySize"], len(body)))
    context.close()
    return rows


def browser_first_token(page: Any) -> float:
    from playwright.sync_api import expect

    answer = page.get_by_role("region", name="Answer")
    page.get_by_role("textbox", name="Question").fill(QUESTION)
    page.get_by_role("button", name="Ask").click()
    expect(page.locator("#ask-meta")).to_contain_text("first token", timeout=60_000)
    return float(answer.get_attribute("data-first-token-ms") or "nan")


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.9 * len(values)) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="the fake LLM's delay before each token")
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    llm_proc, llm_port = procs.start_fake_llm(models="fake-model")
    pg = EmbeddedPostgres(tmp / "pg", delete_on_stop=True)
    gw = None
    try:
        url = pg.start()
        migrate(url, {"embedding_dim": EMBEDDING_DIM})
        gw = start_gateway(tmp / "gw", catalog_for(llm_port), APPLIANCE_DATABASE_URL=url)
        post(f"{gw.base_url}/knowledge/{WORKSPACE}/documents",
             [{"id": p.name, "text": p.read_text()} for p in sorted(DOCS.iterdir())])
        post(f"http://127.0.0.1:{llm_port}/_control", {"tokens": 16, "delay_ms": args.delay_ms})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            weights = page_weight(browser, gw.url)
            page = browser.new_page()
            page.goto(f"{gw.url}/ui/")
            page.get_by_role("combobox", name="Workspace").select_option(WORKSPACE)
            page.get_by_role("combobox", name="Model").select_option("coder")
            browser_first_token(page)
            api_first_token(gw.port)  # warm both paths once
            in_browser, over_api = [], []
            for i in range(args.runs):
                for kind in (("browser", "api") if i % 2 == 0 else ("api", "browser")):
                    if kind == "browser":
                        in_browser.append(browser_first_token(page))
                    else:
                        over_api.append(api_first_token(gw.port))
            browser.close()
    finally:
        if gw is not None:
            procs.stop(gw.proc)
        procs.stop(llm_proc)
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    shell = [w for w in weights if w[0].startswith("/ui")]
    calls = [w for w in weights if not w[0].startswith("/ui")]
    rows = [("Ask page load", "over the wire (KB)", "uncompressed body (KB)")]
    rows += [(name, f"{wire / 1024:.1f}", f"{raw / 1024:.1f}") for name, wire, raw in weights]
    rows.append(("shell total (HTML, JS, CSS)", f"{sum(w[1] for w in shell) / 1024:.1f}",
                 f"{sum(w[2] for w in shell) / 1024:.1f}"))
    rows.append(("API calls before it is usable", f"{sum(w[1] for w in calls) / 1024:.1f}",
                 f"{sum(w[2] for w in calls) / 1024:.1f}"))
    rows.append(("everything", f"{sum(w[1] for w in weights) / 1024:.1f}", f"{sum(w[2] for w in weights) / 1024:.1f}"))
    print(table(rows))
    print()
    b, a = statistics.median(in_browser), statistics.median(over_api)
    print(table([("first answer token (RAG, hybrid + rerank)", "median ms", "p90 ms", "runs"),
                 ("browser: Ask pressed -> first token read", f"{b:.1f}", f"{p90(in_browser):.1f}", str(len(in_browser))),
                 ("API: request sent -> first SSE content", f"{a:.1f}", f"{p90(over_api):.1f}", str(len(over_api))),
                 ("ratio browser / API", f"{b / a:.2f}", "", "")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
