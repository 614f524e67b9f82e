"""Regenerate docs/ui-ask.png, the README's picture of the Ask page:

    python -m tests.ui.screenshot [--out docs/ui-ask.png]

The fake LLM, an embedded PostgreSQL (temporary) and a gateway with tests/eval/docs in a
workspace `home`; the fake LLM answers with a fixed reply citing [1], the sources panel
shows what retrieval really found. Headless Debian chromium, 1200 x 800.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import urllib.request
from pathlib import Path

from appliance.db.migrate import migrate
from appliance.embedded.postgres import EmbeddedPostgres
from tests import procs
from tests.conftest import EMBEDDING_DIM, catalog_for, start_gateway

DOCS = Path(__file__).parents[1] / "eval" / "docs"
REPLY = ("In March you were stuck on the **Zigbee coordinator**: it dropped the kitchen sensors after every "
         "firmware update [1]. The fix was pinning the Zigbee channel to `25`, away from the wifi [1].")


def post(url: str, body: object) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=120).read()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/ui-ask.png"))
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="ui-shot-"))
    llm, port = procs.start_fake_llm(models="fake-model")
    pg = EmbeddedPostgres(tmp / "pg", delete_on_stop=True)
    gw = None
    try:
        url = pg.start()
        migrate(url, {"embedding_dim": EMBEDDING_DIM})
        gw = start_gateway(tmp / "gw", catalog_for(port), APPLIANCE_DATABASE_URL=url)
        post(f"{gw.base_url}/knowledge/home/documents", [{"id": p.name, "text": p.read_text()} for p in sorted(DOCS.iterdir())])
        post(f"http://127.0.0.1:{port}/_control", {"reply": REPLY, "delay_ms": 10})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"{gw.url}/ui/")
            page.get_by_role("combobox", name="Workspace").select_option("home")
            page.get_by_role("combobox", name="Model").select_option("coder")
            page.get_by_role("textbox", name="Question").fill("What was I stuck on in March?")
            page.get_by_role("button", name="Ask").click()
            expect(page.locator("#ask-meta")).to_contain_text("first token", timeout=60_000)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        if gw is not None:
            procs.stop(gw.proc)
        procs.stop(llm)
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
