"""The portal in a real browser, with the whole system moving the money: Playwright drives Chromium.

The app runs as `make run` runs it (embedded.py): a real HTTP server, the outbox relay and
an in-process Dramatiq worker as threads, the bank service on a free port, all on one
SQLite file. A customer signs in, asks for a quote through the form, confirms it, and watches its
page (it refreshes itself) until the exchange is `completed`. The screenshot of the
balances afterwards is docs/portal.png in the README (`make screenshots`).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from conftest import IN_CI, settings_for
from dramatiq import Worker
from sqlalchemy import Engine

import bootstrap
from app import create_app
from harness.wsgi import serving
from services.accounts import open_account
from services.credentials import create_customer
from tests.support.browser import keep_for_docs
from tests.workflow_support import bank_server

pytestmark = [pytest.mark.process, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = "portal.png"
#: The quote the customer confirms, before the exchange exists.
QUOTE_SCREENSHOT = "customer-quote.png"
#: Bounds, not expectations: the exchange completes in a few seconds; a loaded machine may take far longer.
COMPLETED_WITHIN_MS = 90_000
PAGE_TIMEOUT_MS = 30_000
#: A screenshot of a real page is tens of kilobytes; a blank one is a few.
MIN_SCREENSHOT_BYTES = 20_000
EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"


def need(what: str, available: bool) -> None:
    if not available:
        message = f"{what} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class Portal:
    url: str
    account: str


@pytest.fixture
def portal(sqlite_engine: Engine, tmp_path: Path) -> Iterator[Portal]:
    """The embedded system (cli/serve.run_embedded's wiring) on the test's SQLite file."""
    with bank_server(tmp_path) as bank_url:
        settings = settings_for(sqlite_engine, bank_url=bank_url, relay_poll_interval_seconds=0.2,
                                step_min_backoff_ms=100, step_max_backoff_ms=1_000)
        customer = create_customer(sqlite_engine, "Ada Lovelace", email=EMAIL, password=PASSWORD)
        account = open_account(sqlite_engine, "Ada Lovelace",
                               {"CAD": Decimal("10000.00"), "USD": Decimal("2500.00"), "EUR": Decimal("1000.00")},
                               customer_id=customer)
        previous_broker = dramatiq.get_broker()
        bank = bootstrap.build_bank(settings, bank_url)
        workflow = bootstrap.build_workflow(settings, sqlite_engine, bank)
        broker = bootstrap.build_worker(settings, workflow=workflow).broker
        broker.declare_queue(settings.queue_name)
        worker = Worker(broker, worker_threads=2, worker_timeout=100)
        worker.start()
        relay = bootstrap.build_relay(settings, sqlite_engine, broker)
        relay_thread = threading.Thread(target=relay.run, name="outbox-relay", daemon=True)
        relay_thread.start()
        app = create_app(settings)
        app.extensions["fx.engine"].dispose()
        app.extensions["fx.engine"] = sqlite_engine
        app.extensions["fx.bank"] = bank
        try:
            with serving(app, name="portal-server") as url:
                yield Portal(url, str(account))
        finally:
            relay.stop()
            relay_thread.join(timeout=10)
            worker.stop()
            broker.close()
            dramatiq.set_broker(previous_broker)


@pytest.fixture
def browser() -> Iterator[Any]:
    need(CHROMIUM, os.path.exists(CHROMIUM))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        need("the playwright package", False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_customer_signs_in_exchanges_through_the_form_and_watches_it_complete(
    portal: Portal, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(PAGE_TIMEOUT_MS)

    page.goto(f"{portal.url}/")
    assert page.url == f"{portal.url}/login?next=/"  # the balances need a sign-in first
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD + "!")
    page.click("button.primary")
    expect(page.get_by_role("alert")).to_have_text("Wrong e-mail or password.")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("button.primary")
    page.wait_for_url(f"{portal.url}/")
    expect(page.locator("h1")).to_have_text("Hello, Ada Lovelace")
    expect(page.locator("table").first).to_contain_text("10000.00")

    page.select_option("#from_currency", "CAD")
    page.select_option("#to_currency", "USD")
    page.fill("#amount", "250.001")
    page.click("#submit")
    expect(page.locator("#amount-error")).to_have_text("CAD allows at most 2 decimal places.")
    page.fill("#amount", "250.00")
    page.click("#submit")

    # The rate first: a firm quote, confirmed by the customer.
    page.wait_for_url(f"{portal.url}/quotes")
    expect(page.locator("#quote-pay")).to_have_text("250.00 CAD")
    expect(page.locator("#quote-get")).to_have_text("182.75 USD")
    expect(page.locator("#quote-rate")).to_have_text("0.731 USD per CAD")
    quote_shot = tmp_path / QUOTE_SCREENSHOT
    page.screenshot(path=str(quote_shot), full_page=True)
    assert len(quote_shot.read_bytes()) > MIN_SCREENSHOT_BYTES // 2
    keep_for_docs(quote_shot)
    page.click("#confirm")

    page.wait_for_url(f"{portal.url}/exchanges/*")
    expect(page.locator("#quoted")).to_have_text("(as quoted)")
    exchange_url = page.url
    expect(page.locator("h1")).to_contain_text("250.00 CAD")
    # The page refreshes itself each second until the exchange is done.
    expect(page.locator("#state")).to_have_text("completed", timeout=COMPLETED_WITHIN_MS)
    expect(page.locator("h1")).to_have_text("250.00 CAD → 182.75 USD")  # at the built-in 0.7310 USD per CAD
    expect(page.locator(".steps span.now")).to_have_text("completed")

    page.click("text=Back to your balances")
    page.wait_for_url(f"{portal.url}/")
    balances = page.locator("table").first
    expect(balances).to_contain_text("9750.00")
    expect(balances).to_contain_text("2682.75")
    expect(page.locator(f'a[href="{exchange_url.removeprefix(portal.url)}"]')).to_have_text("250.00 CAD → 182.75 USD")

    shot = tmp_path / SCREENSHOT
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width == 1100 and height >= 600
    assert len(data) > MIN_SCREENSHOT_BYTES
    keep_for_docs(shot)
