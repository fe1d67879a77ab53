"""The operations pages in a real browser: headless Chromium against the app in a real HTTP server.

The app runs on SQLite with exchanges in every kind of trouble, reached by their own
steps against the real bank service, and the heartbeats of a worker that died and of a
live relay and reconciler. Chromium renders the dashboard and two timelines;
`--dump-dom` gives what it rendered, `--screenshot` what an operator sees, saved as
docs/dashboard.png, docs/timeline.png and docs/resolved.png for the README.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import settings_for
from sqlalchemy import Engine, insert

from app import create_app
from domain import states as machine
from models import process_heartbeats
from models.base import utcnow
from ops.actions import cancel
from ops.reconciler import compare_with_bank, requeue_stuck
from services.accounts import open_account
from services.workflow import StepDeferred, Workflow, credit_key
from services.workflow.runner import note_next_attempt
from tests.ops_support import age, exchange_in, make_workflow, row_of
from tests.support.browser import chromium_binary, dump_dom, screenshot, served
from tests.workflow_support import bank_server, drive, run_step

pytestmark = pytest.mark.browser

#: Tall enough to show the processes table below the trouble lists.
DASHBOARD_WINDOW = (1280, 2300)
STUCK_AFTER = timedelta(minutes=2)
LONG_AGO = timedelta(minutes=10)
DEAD_AFTER = timedelta(seconds=15)


@dataclass
class Demo:
    url: str
    counts: dict[str, int]
    stuck: uuid.UUID
    stuck_quoted: uuid.UUID
    parked: uuid.UUID
    refunded: uuid.UUID
    cancelled: uuid.UUID
    recovered: uuid.UUID


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

    # The bank refused a credit once; its retry paid it: trouble that is history now.
    recovered = exchange_in(wf, ada, "debited", "88.00")
    wf.bank.set_faults(down=True)
    with pytest.raises(StepDeferred):
        run_step(wf, machine.CREDIT.actor, recovered, worker="worker-7:1234:Thread-1")
    wf.bank.reset_faults()
    drive(wf, recovered)
    note_next_attempt(wf, stuck, machine.CREDIT, utcnow() + timedelta(seconds=90))
    beats(wf.engine)

    # Someone paid the refunded exchange by hand at the bank: the reconciler finds it.
    wf.bank.transfer(key=f"{credit_key(refunded)}:by-hand", reference=str(refunded), account=str(ada),
                     currency="USD", amount=row_of(wf.engine, refunded).to_amount)
    assert [f.kind for f in compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER)] == ["refunded_but_paid"]
    counts = {"completed": 4, "refunded": 1, "needs_attention": 1, "failed": 1, "pending": 1, "debited": 1,
              "quoted": 1, "credited": 0, "compensating": 0}
    return Demo("", counts, stuck, stuck_quoted, parked, refunded, cancelled, recovered)


def beats(engine: Engine) -> None:
    """The worker died ten minutes ago holding a step; a relay and a reconciler beat now."""
    now = utcnow()
    rows = [("worker", 4101, now - LONG_AGO, {"in_hand": 1}), ("relay", 4201, now, None),
            ("reconciler", 4301, now, None)]
    with engine.begin() as conn:
        for role, pid, beat_at, holding in rows:
            conn.execute(insert(process_heartbeats).values(
                id=f"{role}:fx-host-1:{pid}", role=role, host="fx-host-1", pid=pid, version="0.4.0",
                started_at=now - timedelta(hours=3), beat_at=beat_at, stopped_at=None, holding=holding))


@pytest.fixture
def demo(sqlite_engine: Engine, tmp_path: Path) -> Iterator[Demo]:
    chromium_binary()  # skip (or fail in CI) before seeding anything
    with bank_server(tmp_path) as bank_url:
        wf = make_workflow(sqlite_engine, bank_url)
        data = seed(wf)
        app = create_app(settings_for(sqlite_engine, stuck_after_seconds=STUCK_AFTER.total_seconds(),
                                      process_dead_after_seconds=DEAD_AFTER.total_seconds()))
        app.extensions["fx.engine"].dispose()
        app.extensions["fx.engine"] = sqlite_engine
        app.extensions["fx.bank"] = wf.bank
        with served(app) as url:
            data.url = url
            yield data


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

    assert 'id="alarm-worker"' in dom and 'id="alarm-relay"' not in dom and 'id="alarm-reconciler"' not in dom
    processes = section(dom, "Processes")
    assert "worker" in processes and 'class="status-dead"' in processes and "1 in hand" in processes
    assert processes.count('class="status-alive"') == 2
    assert "next retry" in stuck

    assert screenshot(tmp_path, f"{demo.url}/ops/", "dashboard.png", DASHBOARD_WINDOW).exists()


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


def test_an_exchange_that_recovered_shows_its_trouble_as_history_not_as_an_alert(demo: Demo, tmp_path: Path) -> None:
    url = f"{demo.url}/ops/exchanges/{demo.recovered}"
    dom = dump_dom(tmp_path, url)

    assert 'class="trouble"' not in dom
    history = re.search(r'<div class="history">(.*?)</div>', dom, re.S)
    assert history is not None, "no history box"
    assert "resolved" in history.group(1) and "bank answered 503" in history.group(1)
    assert "No action applies to a completed exchange." in dom

    assert screenshot(tmp_path, url, "resolved.png").exists()
