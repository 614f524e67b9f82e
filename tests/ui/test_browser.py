"""The web UI in a real browser (Debian's chromium through Playwright, nothing downloaded):
ask over an ingested workspace and watch the answer stream in with its sources; upload files
and see the progress and the listing; with keys configured, only the key prompt without one."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FakeLLM, Gateway
from tests.ui.conftest import AUTH, KEY, open_ui

pytestmark = pytest.mark.timeout(120)
EVAL_DOCS = Path(__file__).parents[1] / "eval" / "docs"


def put_docs(gw: Gateway, workspace: str) -> None:
    docs = [{"id": p.name, "text": p.read_text()} for p in sorted(EVAL_DOCS.iterdir())]
    req = urllib.request.Request(f"{gw.base_url}/knowledge/{workspace}/documents", data=json.dumps(docs).encode(),
                                 method="POST", headers={"Content-Type": "application/json", **AUTH})
    urllib.request.urlopen(req, timeout=60).read()


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def test_an_answer_streams_in_with_numbered_citations_and_its_sources(page: Any, ui_gateway: Gateway,
                                                                      llm: FakeLLM) -> None:
    put_docs(ui_gateway, "ui-ask")
    llm.control(echo_context=True, delay_ms=5)
    open_ui(page, ui_gateway)
    page.get_by_role("combobox", name="Workspace").select_option("ui-ask")
    expect()(page.get_by_role("combobox", name="Model")).to_contain_text("coder")
    page.get_by_role("combobox", name="Model").select_option("coder")
    page.get_by_role("textbox", name="Question").fill("What was I stuck on in March?")
    page.get_by_role("button", name="Ask").click()
    answer = page.get_by_role("region", name="Answer")
    expect()(answer).to_contain_text("Zigbee coordinator")
    expect()(page.locator("#ask-meta")).to_contain_text("first token")
    sources = page.get_by_role("list", name="Sources").get_by_role("listitem")
    expect()(sources.first).to_contain_text("march-journal.md")
    expect()(sources.first).to_contain_text("rerank")  # its scores
    expect()(sources.first).to_contain_text("pinning the channel to 25")  # the chunk's text
    assert answer.get_by_role("link", name="source 1").count() >= 1  # [1] in the answer links to it
    sent = llm.requests()[-1]
    assert sent["model"] == "fake-model" and sent["stream"] is True


def test_model_text_is_rendered_as_markdown_never_as_markup(page: Any, ui_gateway: Gateway, llm: FakeLLM) -> None:
    llm.control(reply='**bold** <img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> `code`')
    open_ui(page, ui_gateway)
    page.get_by_role("combobox", name="Workspace").select_option("")
    page.get_by_role("textbox", name="Question").fill("hello")
    page.get_by_role("textbox", name="Question").press("Control+Enter")  # the keyboard way to ask
    answer = page.get_by_role("region", name="Answer")
    expect()(answer).to_contain_text("<img src=x")
    assert answer.locator("strong").inner_text() == "bold" and answer.locator("code").inner_text() == "code"
    assert answer.locator("img, script").count() == 0
    assert page.evaluate("() => window.pwned") is None and page.locator("img").count() == 0


def test_files_upload_with_progress_and_are_listed(page: Any, ui_gateway: Gateway, tmp_path: Path) -> None:
    (tmp_path / "boiler.md").write_text("# Boiler\n\nThe boiler service is every September.\n")
    (tmp_path / "wiki.html").write_text("<html><body><h1>Wiki</h1><p>The NAS is called vault.</p>"
                                        "<script>bad()</script></body></html>")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    open_ui(page, ui_gateway, "#knowledge")
    page.get_by_role("textbox", name="New workspace").fill("ui-upload")
    page.get_by_role("button", name="Add").click()
    page.locator("#pick-files").set_input_files([str(tmp_path / n) for n in ("boiler.md", "wiki.html", "photo.jpg")])
    status = page.get_by_role("status")
    expect()(status).to_contain_text("ingested 2 files into 'ui-upload'", timeout=60_000)
    expect()(status).to_contain_text("1 skipped")
    progress = page.get_by_role("progressbar", name="Ingest progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "2"
    rows = page.locator("#kn-docs tr")
    expect()(rows).to_have_count(2)
    expect()(rows.first).to_contain_text("boiler.md")
    page.get_by_role("searchbox", name="Search").fill("what is the NAS called")
    page.get_by_role("button", name="Search").click()
    hits = page.get_by_role("list", name="Search results").get_by_role("listitem")
    expect()(hits.first).to_contain_text("wiki.html")
    expect()(hits.first).to_contain_text("The NAS is called vault.")
    assert "bad()" not in hits.first.inner_text()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete boiler.md").click()
    expect()(rows).to_have_count(1)


def test_with_keys_a_page_without_one_shows_only_the_key_prompt(page: Any, ui_gateway: Gateway) -> None:
    failed: list[int] = []
    page.on("response", lambda r: failed.append(r.status) if "/v1/" in r.url and r.status != 200 else None)
    page.goto(f"{ui_gateway.url}/ui/")
    key = page.get_by_role("textbox", name="API key")
    expect()(key).to_be_visible()
    for hidden in (page.get_by_role("button", name="Ask"), page.get_by_role("navigation", name="Pages")):
        expect()(hidden).to_be_hidden()
    assert page.get_by_role("combobox", name="Model").locator("option").count() == 0
    assert failed == [401]
    key.fill(KEY)
    page.get_by_role("button", name="Use key").click()
    expect()(page.get_by_role("button", name="Ask")).to_be_visible()
    expect()(page.get_by_role("combobox", name="Model")).to_contain_text("coder")
    assert page.evaluate("() => localStorage.getItem('appliance.key')") == KEY
