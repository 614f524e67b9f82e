"""The web UI's world: one gateway with knowledge on the session's PostgreSQL and an API key
(the UI's stricter case: nothing without the key), and, when Debian's chromium is
installed, a headless browser driven by Playwright."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests import procs
from tests.conftest import FakeLLM, Gateway, catalog_for, start_gateway

KEY = "ui-test-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="session")
def ui_gateway(fake_llm: FakeLLM, migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    extra = f'\n[[api_keys]]\nname = "ui"\nsha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n'
    gw = start_gateway(tmp_path_factory.mktemp("ui-gateway"), catalog_for(fake_llm.port, extra=extra),
                       APPLIANCE_DATABASE_URL=migrated_pg)
    try:
        yield gw
    finally:
        procs.stop(gw.proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: Playwright's sync API marks an event loop as running on this
    thread while it is open, and every asyncio test after it would fail to start its own."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def open_ui(page: Any, gw: Gateway, fragment: str = "") -> None:
    """The UI as a person opens it: the page, then the key in the prompt."""
    page.goto(f"{gw.url}/ui/{fragment}")
    page.get_by_role("textbox", name="API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    page.get_by_role("navigation", name="Pages").wait_for()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
