"""The console in a real browser: Debian's headless Chromium (/usr/bin/chromium) driven by Playwright, against the
API served by werkzeug in a thread on an Engine (SQLite, fake providers, fake clock) so sagas can be put in known
states. Without Chromium these tests fail: `.ci/run` installs it (apt-get install chromium)."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.support import ROOT, TEST_TOKENS
from tests.unit.engine_fakes import Engine, engine_fixture, served

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "var" / "screenshots"
VIEWPORTS = {"laptop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(.ci/run installs it)", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


class Console:
    """One browser tab on the console; collects the page's errors (a CSP violation is one) to assert none."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: ConsoleMessage) -> None:
        # the browser logs each 4xx answer (a 403 or 409 the page shows): not an error of the page
        if message.type == "error" and not re.search(r"status of 4\d\d", message.text):
            self.errors.append(message.text)

    def login(self, role: str) -> None:
        self.page.goto(f"{self.url}/console")
        self.page.get_by_label("API token").fill(TEST_TOKENS[role])
        self.page.get_by_role("button", name="Log in").click()

    def logged_in(self, role: str) -> None:
        self.login(role)
        self.page.locator("#who-name").filter(has_text=role).wait_for()

    def go(self, hash_: str) -> None:
        self.page.evaluate("h => { location.hash = h; }", hash_)

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def console_of(browser: Browser, engine: Engine) -> Iterator[Any]:
    """Opens console tabs (laptop or phone size) on the API served on `engine`."""
    server = served(engine)
    url = next(server)
    contexts = []

    def open_(viewport: str = "laptop") -> Console:
        context = browser.new_context(viewport=VIEWPORTS[viewport], timezone_id="UTC")  # type: ignore[arg-type]
        contexts.append(context)
        return Console(context.new_page(), url)

    yield open_
    for context in contexts:
        context.close()
    server.close()  # served()'s finally: shuts the server down
