"""Support work in the console, in headless Chromium: find, retry, skip, bulk dry run and run; a viewer reads
only; a storefront token is refused. Writes screenshots of each main view at laptop and phone width."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from saga.order_saga import ORDER_SAGA
from tests.browser.conftest import VIEWPORTS
from tests.support import bearer
from tests.unit.engine_fakes import Engine

pytestmark = pytest.mark.browser
PAY_TRIES = ORDER_SAGA.step("pay").retry.max_attempts


def parked(engine: Engine, customer_id: int = 7) -> int:
    engine.providers.script("charge", *["lost"] * PAY_TRIES)
    placed = engine.place(customer_id=customer_id)
    engine.settle()
    return placed.saga_id


def on_a_parked_saga(console_of: Any, engine: Engine, role: str = "support") -> tuple[Any, int]:
    """A console logged in as `role` on the page of a saga parked FAILED on pay."""
    saga_id = parked(engine)
    console = console_of()
    console.logged_in(role)
    console.go(f"#/sagas/{saga_id}")
    expect(console.page.locator("#saga-title")).to_contain_text("FAILED:pay")
    return console, saga_id


def confirm(page: Any, reason: str) -> None:
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Reason").fill(reason)
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()


def test_find_a_failed_saga_retry_it_and_see_it_completed(console_of: Any, engine: Engine) -> None:
    engine.place(customer_id=3)
    engine.settle()
    saga_id = parked(engine, customer_id=41)
    order_id = engine.saga(saga_id).order_id
    console = console_of()
    console.logged_in("support")
    page = console.page
    expect(page.locator("#counts [data-status=FAILED] strong")).to_have_text("1")

    expect(page.locator("#list-summary")).to_have_text("2 sagas found")
    search = page.locator("#filter-form")
    search.get_by_label("Error text").fill("DID NOT ANSWER")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#list-summary")).to_have_text("1 saga found")
    search.get_by_label("Created before").fill("2030-01-01T12:00")  # the engine's clock starts then (UTC)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#list-summary")).to_have_text("0 sagas found")
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#list-summary")).to_have_text("2 sagas found")
    search.get_by_label("Order id").fill(str(order_id))
    search.get_by_label("Created from").fill("2030-01-01T12:00")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#list-summary")).to_have_text("1 saga found")
    row = page.locator(f"#saga-table tr[data-saga='{saga_id}']")
    expect(row).to_contain_text("FAILED")
    expect(row).to_contain_text("pay")
    row.get_by_role("link", name=f"#{saga_id}").click()

    expect(page.locator("#saga-title")).to_contain_text("FAILED:pay")
    expect(page.locator("#timeline li[data-step=pay] .attempts tbody tr")).to_have_count(PAY_TRIES)
    expect(page.locator("#diagram [aria-current=step]")).to_have_attribute("data-step", "pay")
    page.get_by_role("button", name="retry", exact=True).click()
    confirm(page, "payment provider confirmed the charge")
    expect(page.locator("#outcome")).to_contain_text("retry done: FAILED:pay → RUNNING")

    engine.settle()
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#saga-title")).to_contain_text("COMPLETED")
    expect(page.locator("#audit-table")).to_contain_text("payment provider confirmed the charge")
    assert console.errors == []


def test_skip_a_step_with_a_reason_and_read_it_in_the_audit_log(console_of: Any, engine: Engine) -> None:
    console, saga_id = on_a_parked_saga(console_of, engine)
    page = console.page
    page.get_by_role("button", name="skip", exact=True).click()
    page.locator("#confirm").get_by_role("button", name="Cancel").click()
    expect(page.locator("#audit-table")).to_contain_text("No support action yet")

    page.get_by_role("button", name="skip", exact=True).click()
    confirm(page, "charged by hand, ticket 1234")
    expect(page.locator("#outcome")).to_contain_text("skip done")
    audit = page.locator("#audit-table tbody tr").first
    expect(audit).to_contain_text("skip")
    expect(audit).to_contain_text("charged by hand, ticket 1234")
    expect(audit).to_contain_text("done")
    assert console.errors == []


def test_resume_from_a_chosen_step(console_of: Any, engine: Engine) -> None:
    console, saga_id = on_a_parked_saga(console_of, engine)
    page = console.page
    page.get_by_role("button", name="resume", exact=True).click()
    dialog = page.locator("#confirm")
    expect(dialog.get_by_label("Step")).to_be_visible()
    dialog.get_by_label("Step").select_option("pay")
    confirm(page, "provider fixed, run it from pay")
    expect(page.locator("#outcome")).to_contain_text("resume done: FAILED:pay → RUNNING")
    expect(page.locator("#audit-table tbody tr").first).to_contain_text("pay")
    engine.settle()
    assert engine.saga(saga_id).status == "COMPLETED"
    assert console.errors == []


def test_a_refused_action_shows_the_409s_detail(console_of: Any, engine: Engine) -> None:
    console, saga_id = on_a_parked_saga(console_of, engine)
    page = console.page
    expect(page.get_by_role("button", name="skip", exact=True)).to_be_visible()
    answer = requests.post(f"{console.url}/admin/sagas/{saga_id}/retry", json={"reason": "someone else did"},
                           headers=bearer("support"), timeout=10)  # behind the page's back
    assert answer.status_code == 200, answer.text
    engine.settle()

    page.get_by_role("button", name="skip", exact=True).click()  # the page still offers it
    confirm(page, "too late")
    expect(page.locator("#outcome")).to_contain_text("Refused (409)")
    expect(page.locator("#saga-title")).to_contain_text("COMPLETED")
    expect(page.get_by_role("button", name="skip", exact=True)).to_have_count(0)
    assert console.errors == []


def test_a_bulk_dry_run_counts_then_runs_with_progress(console_of: Any, engine: Engine) -> None:
    ids = [parked(engine, customer_id=c) for c in (1, 2, 3)]
    engine.place()
    engine.settle()
    console = console_of()
    console.logged_in("support")
    console.go("#/bulk")
    page = console.page
    form = page.locator("#bulk-form")
    form.get_by_label("Action").select_option("retry")
    form.get_by_label("Reason").fill("payment provider is back")
    form.get_by_label("FAILED").check()
    form.get_by_label("Failing step").fill("pay")
    form.get_by_role("button", name="Dry run").click()
    expect(page.locator("#bulk-count")).to_have_attribute("data-total", "3")
    expect(page.locator("#bulk-count")).to_contain_text("3 sagas would get retry")
    expect(page.locator("#bulk-sagas li")).to_have_count(3)

    page.get_by_role("button", name="Run on these sagas").click()
    confirm(page, "go ahead")
    expect(page.locator("#bulk-status")).to_contain_text("Finished. 3 of 3 done: 3 acted on")
    expect(page.locator("#bulk-progress")).to_have_js_property("value", 3)
    engine.settle()
    assert all(engine.saga(i).status == "COMPLETED" for i in ids)


def test_a_viewer_sees_no_action_buttons(console_of: Any, engine: Engine) -> None:
    console, _ = on_a_parked_saga(console_of, engine, "viewer")
    page = console.page
    expect(page.locator("#who-name")).to_contain_text("read only")
    expect(page.locator("#timeline li")).not_to_have_count(0)
    expect(page.locator("#saga-actions button")).to_have_count(0)
    console.go("#/bulk")
    expect(page.locator("#bulk-viewer")).to_be_visible()
    expect(page.locator("#bulk-form")).to_be_hidden()


def test_a_storefront_token_is_refused(console_of: Any, engine: Engine) -> None:
    console = console_of()
    console.login("storefront")
    page = console.page
    expect(page.locator("#message")).to_contain_text("refused (403)")
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0 and console.errors == []
    assert "storefront-test-token" not in page.url


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_screenshots_of_each_main_view(console_of: Any, engine: Engine, viewport: str) -> None:
    engine.place(customer_id=5)
    engine.settle()
    saga_id = parked(engine, customer_id=9)
    parked(engine, customer_id=11)
    console = console_of(viewport)
    console.logged_in("support")
    page = console.page
    expect(page.locator("#saga-table tbody tr")).to_have_count(3)
    expect(page.locator("#counts [data-status=FAILED] strong")).to_have_text("2")
    console.screenshot(f"list-{viewport}")
    console.go(f"#/sagas/{saga_id}")
    expect(page.locator("#audit-table")).to_contain_text("No support action yet")
    console.screenshot(f"saga-{viewport}")
    console.go("#/bulk")
    page.locator("#bulk-form").get_by_label("Reason").fill("provider back")
    page.locator("#bulk-form").get_by_label("FAILED").check()
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#bulk-count")).to_have_attribute("data-total", "2")
    console.screenshot(f"bulk-{viewport}")
    assert console.errors == []


def test_keyboard_only_login_open_a_saga_and_an_action_dialog(console_of: Any, engine: Engine) -> None:
    saga_id = parked(engine)
    console = console_of()
    page = console.page
    page.goto(f"{console.url}/console")
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type("support-test-token")
    page.keyboard.press("Enter")
    link = page.get_by_role("link", name=f"#{saga_id}")
    expect(link).to_be_visible()
    for _ in range(40):  # Tab through the page until the saga's link has the focus
        if link.evaluate("el => el === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(link).to_be_focused()
    outline = link.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline == "solid", "the focused link shows a focus ring"
    page.keyboard.press("Enter")
    expect(page.locator("#saga-title")).to_contain_text("FAILED:pay")
    retry = page.get_by_role("button", name="retry", exact=True)
    retry.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-reason")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#confirm")).to_be_hidden()
    assert engine.saga(saga_id).status == "FAILED"
    assert console.errors == []
