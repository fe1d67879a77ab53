"""The operations pages in a real browser: headless Chromium against the app in a real HTTP server.

The app runs on SQLite with exchanges in every kind of trouble, reached by their own
steps against the real bank service. Chromium renders the dashboard and one timeline;
`--dump-dom` gives what it rendered, `--screenshot` what an operator sees, saved as
docs/dashboard.png and docs/timeline.png for the README.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import IN_CI, settings_for
from sqlalchemy import Engine
from werkzeug.serving import make_server

from app import create_app
from domain import states as machine
from ops.actions import cancel
from ops.reconciler import compare_with_bank, requeue_stuck
from services.accounts import open_account
from services.workflow import StepDeferred, Workflow, credit_key
from tests.ops_support import age, exchange_in, make_workflow, row_of
from tests.workflow_support import bank_server, run_step

DOCS = Path(__file__).resolve().parent.parent / "docs"
WINDOW = (1280, 1400)
#: Generous: Chromium starts in about a second here, far slower on a loaded machine.
CHROMIUM_TIMEOUT_SECONDS = 120
#: A screenshot of a real page is tens of kilobytes; a blank one is a few.
MIN_SCREENSHOT_BYTES = 20_000
STUCK_AFTER = timedelta(minutes=2)
LONG_AGO = timedelta(minutes=10)


def chromium_binary() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Demo:
    url: str
    counts: dict[str, int]
    stuck: uuid.UUID
    stuck_quoted: uuid.UUID
    parked: uuid.UUID
    refunded: uuid.UUID
    cancelled: uuid.UUID


def seed(wf: Workflow) -> Demo:
    """Exchanges as an operator might find them on a bad morning."""
    ada = open_account(wf.engine, "Ada Lovelace", {"CAD": Decimal("10000.00")})
    for amount in ("120.00", "75.50", "980.00"):
        exchange_in(wf, ada, "completed", amount)
    refunded = exchange_in(wf, ada, "refunded", "300.00")
    parked = exchange_in(wf, ada, "needs_attention", "410.00")
    cancelled = exchange_in(wf, ada, "quoted", "55.00")
    cancel(wf.engine, cancelled, "alice", queue="exchanges")
    exchange_in(wf, ada, "pending", "20.00")

    # The bank answered 503 to the credit twice, then its worker went quiet.
    stuck = exchange_in(wf, ada, "debited", "250.00")
    wf.bank.set_faults(down=True)
    for _ in range(2):
        with pytest.raises(StepDeferred):
            run_step(wf, machine.CREDIT.actor, stuck, worker="worker-7:1234:Thread-3")
    wf.bank.reset_faults()
    stuck_quoted = exchange_in(wf, ada, "quoted", "64.00")
    for exchange_id in (stuck, stuck_quoted, refunded):
        age(wf.engine, exchange_id, LONG_AGO)
    requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue="exchanges")
    for exchange_id in (stuck, stuck_quoted):
        age(wf.engine, exchange_id, LONG_AGO)  # and nobody picked the message up since

    # Someone paid the refunded exchange by hand at the bank: the reconciler finds it.
    wf.bank.transfer(key=f"{credit_key(refunded)}:by-hand", reference=str(refunded), account=str(ada),
                     currency="USD", amount=row_of(wf.engine, refunded).to_amount)
    assert [f.kind for f in compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER)] == ["refunded_but_paid"]
    counts = {"completed": 3, "refunded": 1, "needs_attention": 1, "failed": 1, "pending": 1, "debited": 1,
              "quoted": 1, "credited": 0, "compensating": 0}
    return Demo("", counts, stuck, stuck_quoted, parked, refunded, cancelled)


@pytest.fixture
def demo(sqlite_engine: Engine, tmp_path: Path) -> Iterator[Demo]:
    chromium_binary()  # skip (or fail in CI) before seeding anything
    with bank_server(tmp_path) as bank_url:
        wf = make_workflow(sqlite_engine, bank_url)
        data = seed(wf)
        app = create_app(settings_for(sqlite_engine, stuck_after_seconds=STUCK_AFTER.total_seconds()))
        app.extensions["fx.engine"].dispose()
        app.extensions["fx.engine"] = sqlite_engine
        app.extensions["fx.bank"] = wf.bank
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="ops-server", daemon=True)
        thread.start()
        try:
            data.url = f"http://127.0.0.1:{server.server_port}"
            yield data
        finally:
            server.shutdown()
            thread.join()


def chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"chromium-{uuid.uuid4().hex[:8]}"
    command = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(tmp_path: Path, url: str) -> str:
    dom = chromium(tmp_path, "--dump-dom", url)
    assert "<html" in dom, dom[:500]
    return dom


def screenshot(tmp_path: Path, url: str, name: str) -> Path:
    shot = tmp_path / name
    chromium(tmp_path, f"--screenshot={shot}", url)
    assert_png(shot)
    DOCS.mkdir(exist_ok=True)
    kept = DOCS / name
    shutil.copyfile(shot, kept)
    return kept


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW
    assert len(data) > MIN_SCREENSHOT_BYTES, f"{path} is only {len(data)} bytes: a blank page?"


def section(dom: str, heading: str) -> str:
    start = dom.index(f"<h2>{heading}")
    end = dom.find("<h2>", start + 4)
    return dom[start:end if end != -1 else None]


def card_counts(dom: str) -> dict[str, int]:
    cards = re.findall(r'<span class="state state-[a-z_]+">([a-z_]+)</span>\s*<b>(\d+)</b>', dom)
    return {state: int(n) for state, n in cards}


def test_the_dashboard_renders_counts_trouble_lists_and_mismatches(demo: Demo, tmp_path: Path) -> None:
    dom = dump_dom(tmp_path, f"{demo.url}/ops/")

    assert card_counts(dom) == demo.counts
    stuck = section(dom, "Stuck")
    assert str(demo.stuck) in stuck and str(demo.stuck_quoted) in stuck
    assert "bank answered 503" in stuck  # the stuck credit's last error, in its row
    assert str(demo.parked) in section(dom, "Needs attention")
    failures = section(dom, "Failed and refunded")
    assert str(demo.refunded) in failures and str(demo.cancelled) in failures
    assert "cancelled by operator alice" in failures
    mismatches = section(dom, "Ledger / bank mismatches")
    assert str(demo.refunded) in mismatches and "refunded_but_paid" in mismatches

    assert screenshot(tmp_path, f"{demo.url}/ops/", "dashboard.png").exists()


def test_the_timeline_page_renders_the_failing_step_and_the_banks_error_first(demo: Demo, tmp_path: Path) -> None:
    url = f"{demo.url}/ops/exchanges/{demo.stuck}"
    dom = dump_dom(tmp_path, url)

    trouble = re.search(r'<div class="trouble">(.*?)</div>', dom, re.S)
    assert trouble is not None, "no trouble box"
    box = trouble.group(1)
    assert "<b>credit</b>" in box and "attempt 2" in box and "retrying" in box
    assert "bank answered 503" in box and "bank unavailable (nothing applied)" in box
    assert dom.index('class="trouble"') < dom.index("<h2>Timeline</h2>")
    timeline = section(dom, "Timeline")
    for step in ("accept", "quote", "debit", "credit", "reconciler"):
        assert f"<td>{step}</td>" in timeline
    assert "requeued" in timeline and "worker-7:1234:Thread-3" in timeline
    assert 'name="csrf_token"' in dom  # the recovery forms are there

    assert screenshot(tmp_path, url, "timeline.png").exists()
