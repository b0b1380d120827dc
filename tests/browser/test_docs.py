"""/docs in headless Chromium with no network beyond the API itself: Swagger UI renders every operation of the
OpenAPI document, and the page's content security policy blocks nothing it needs."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Route, expect

from tests.support import TEST_TOKENS
from tests.unit.engine_fakes import Engine, served

pytestmark = pytest.mark.browser


def test_docs_renders_every_operation_offline_without_a_policy_violation(browser: Browser, engine: Engine) -> None:
    server = served(engine)
    url = next(server)
    spec = requests.get(f"{url}/openapi.json", timeout=5).json()
    count = sum(1 for item in spec["paths"].values() for method in item if method != "parameters")
    outside: list[str] = []
    errors: list[str] = []

    def same_origin_only(route: Route) -> Any:
        if route.request.url.startswith(url):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort("internetdisconnected")

    context = browser.new_context()
    try:
        context.route("**/*", same_origin_only)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/docs")
        expect(page.locator(".opblock")).to_have_count(count)
        expect(page.locator(".opblock-summary-path", has_text="/orders/{order_id}/cancel")).to_be_visible()
        page.get_by_role("button", name="Authorize").click()
        page.locator(".auth-container input").first.fill(TEST_TOKENS["storefront"])
        expect(page.locator(".auth-container")).to_contain_text("bearerAuth")
    finally:
        context.close()
        server.close()
    assert outside == []
    assert errors == []
