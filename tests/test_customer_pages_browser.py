"""In headless Chromium, a customer's exchange page off the happy path: a delayed exchange says so and
keeps refreshing; a refunded one gives its reason; a parked one says what to expect and stops
refreshing. Each is docs/customer-<kind>.png in the README (`make screenshots`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import settings_for
from sqlalchemy import Engine

from app import create_app
from domain import customer_view
from services.accounts import open_account
from services.credentials import create_customer
from services.workflow import Workflow
from tests.ops_support import credit_retrying, exchange_in, make_workflow
from tests.support.browser import keep_for_docs, served
from tests.test_portal_browser import PAGE_TIMEOUT_MS, browser, png_size  # noqa: F401 - the browser fixture
from tests.workflow_support import bank_server

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "grace@example.com", "a long enough password"


@dataclass(frozen=True)
class Customer:
    url: str
    wf: Workflow
    account: uuid.UUID


@pytest.fixture
def customer_site(sqlite_engine: Engine, tmp_path: Path) -> Iterator[Customer]:
    with bank_server(tmp_path) as bank_url:
        wf = make_workflow(sqlite_engine, bank_url)
        owner = create_customer(sqlite_engine, "Grace Hopper", email=EMAIL, password=PASSWORD)
        account = open_account(sqlite_engine, "Grace Hopper", {"CAD": Decimal("5000.00")}, customer_id=owner)
        app = create_app(settings_for(sqlite_engine, bank_url=bank_url))
        app.extensions["fx.engine"].dispose()
        app.extensions["fx.engine"] = sqlite_engine
        with served(app) as url:
            yield Customer(url, wf, account)


CASES: dict[str, tuple[Callable[[Workflow, uuid.UUID], uuid.UUID], str, bool]] = {
    # kind: (how to get there, what the status line must say, whether the page keeps refreshing)
    "delayed": (lambda wf, a: credit_retrying(wf, a, amount="250.00"), "held, not lost", True),
    "refunded": (lambda wf, a: exchange_in(wf, a, "refunded", amount="250.00"),
                 customer_view.FAILURE_REASONS["bank_unavailable"], False),
    "parked": (lambda wf, a: exchange_in(wf, a, "needs_attention", amount="250.00"),
               "you need do nothing", False),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_a_customer_sees_where_an_unhappy_exchange_stands_and_what_comes_next(
        customer_site: Customer, browser: Any, kind: str, tmp_path: Path) -> None:  # noqa: F811 - the browser fixture
    from playwright.sync_api import expect

    make, says, refreshes = CASES[kind]
    exchange_id = make(customer_site.wf, customer_site.account)
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(f"{customer_site.url}/login")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("button.primary")
    page.wait_for_url(f"{customer_site.url}/")

    page.goto(f"{customer_site.url}/exchanges/{exchange_id}")
    expect(page.locator("body")).to_contain_text(says)
    assert (page.locator('meta[http-equiv="refresh"]').count() == 1) is refreshes
    expect(page.locator("body")).not_to_contain_text("needs_attention")  # the raw state is for operators
    if kind == "refunded":
        expect(page.locator("#ended")).to_have_text("refunded")
        expect(page.locator(".steps span.done")).to_have_count(2)  # accepted and rate fixed; debited is where it ended

    shot = tmp_path / f"customer-{kind}.png"
    page.screenshot(path=str(shot), full_page=True)
    keep_for_docs(shot)
    width, _ = png_size(shot.read_bytes())
    assert width == 1000
