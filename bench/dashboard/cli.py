"""What the operators' pages and /metrics cost as history grows, on PostgreSQL.

    .venv/bin/python -m bench.dashboard [--exchanges 1000000] [--baseline 10000] [--repeat 20]

Seeds a scratch database with `--baseline` settled exchanges (each with its timeline entries and
its published outbox message), times `/ops/`, one exchange's page, `/metrics`, the reconciler's
stuck-exchange pass and its bank comparison (the pass that runs every interval, judging what
settled or changed at the bank since the last one, and the full one it runs once a day), against
the real bank service in a thread; then grows the history to `--exchanges` and times them again.
The two columns, measured in the same run, show whether a cost follows the history or not.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Engine, text

from bank.client import BankClient
from bank.server import create_app as create_bank
from harness.databases import POSTGRES_ADMIN_URL, ScratchDatabase, scratch_name
from harness.wsgi import serving
from infra.database import make_engine
from infra.migrate import upgrade
from models.base import utcnow
from ops import counts
from services.accounts import open_account

#: Rows per seeding statement: big enough to be quick, small enough to show progress.
CHUNK = 200_000
SETTLE_AFTER = timedelta(minutes=2)
#: The full comparison reads all history: timed fewer times.
FULL_REPEAT = 3


@contextmanager
def bank_service(directory: str) -> Iterator[BankClient]:
    """The real bank service on a free port, in a thread, with an empty SQLite file."""
    with serving(create_bank(os.path.join(directory, "bank.db")), name="bank") as url:
        yield BankClient(url, connect_timeout=2, read_timeout=10)


def seed(engine: Engine, account: str, start: int, stop: int) -> None:
    """Completed exchanges start..stop-1, a month back in time, each with two timeline entries
    (accept, receipt) and its published outbox message, written by set-based SQL."""
    for low in range(start, stop, CHUNK):
        high = min(stop, low + CHUNK)
        with engine.begin() as conn:
            conn.execute(text("""
                INSERT INTO exchanges (id, account_id, from_currency, to_currency, amount, rate, to_amount, state,
                    step, attempt, claim_token, step_epoch, outcome_unknown, receipt_sent_at, created_at,
                    updated_at, progressed_at)
                SELECT md5('x' || i)::uuid, CAST(:account AS uuid), 'CAD', 'USD', 100.00, 0.731, 73.10,
                    'completed', 'complete', 1, 5, 0, false, t, t, t, t
                FROM generate_series(:low, :high - 1) AS i,
                     LATERAL (SELECT now() - interval '30 days' + i * interval '1 millisecond') AS at(t)
            """), {"account": account, "low": low, "high": high})
            conn.execute(text("""
                INSERT INTO exchange_events (exchange_id, step, attempt, outcome, state, created_at)
                SELECT md5('x' || i)::uuid, s.step, s.attempt, s.outcome, s.state,
                       now() - interval '30 days' + i * interval '1 millisecond'
                FROM generate_series(:low, :high - 1) AS i,
                     (VALUES ('accept', 0, 'accepted', 'pending'), ('receipt', 1, 'sent', 'completed'))
                         AS s(step, attempt, outcome, state)
            """), {"low": low, "high": high})
            conn.execute(text("""
                INSERT INTO outbox_messages (id, queue, actor, payload, created_at, available_at, published_at,
                    attempts)
                SELECT md5('o' || i)::uuid, 'exchanges', 'quote_exchange',
                       json_build_object('exchange_id', md5('x' || i)::uuid), t, t, t, 0
                FROM generate_series(:low, :high - 1) AS i,
                     LATERAL (SELECT now() - interval '30 days' + i * interval '1 millisecond') AS at(t)
            """), {"low": low, "high": high})
        print(f"  seeded {high:,} exchanges", file=sys.stderr, flush=True)
    with engine.begin() as conn:
        counts.fold(conn)  # as the reconciler's next pass does
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def median_ms(call: Callable[[], object], repeat: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def measure(engine: Engine, url: str, repeat: int, some_exchange: str, bank: BankClient) -> dict[str, float]:
    from app import create_app
    from ops.reconciler import compare_ledger, requeue_stuck
    from settings import Settings

    app = create_app(Settings(database_url=url))
    client = app.test_client()

    def get(path: str) -> Callable[[], None]:
        def call() -> None:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        return call

    figures = {
        "GET /ops/": median_ms(get("/ops/"), repeat),
        "GET /ops/exchanges/<id>": median_ms(get(f"/ops/exchanges/{some_exchange}"), repeat),
        "GET /metrics": median_ms(get("/metrics"), repeat),
        "reconciler: stuck-exchange pass": median_ms(
            lambda: requeue_stuck(engine, stuck_after=timedelta(minutes=2), queue="exchanges"), repeat),
        "reconciler: bank comparison, each pass": median_ms(
            lambda: compare_ledger(engine, bank, settle_after=SETTLE_AFTER, now=utcnow(), full=False), repeat),
        "reconciler: bank comparison, full (daily)": median_ms(
            lambda: compare_ledger(engine, bank, settle_after=SETTLE_AFTER, now=utcnow(), full=True), FULL_REPEAT),
    }
    app.extensions["fx.engine"].dispose()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    p.add_argument("--exchanges", type=int, default=1_000_000)
    p.add_argument("--baseline", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL)
    args = p.parse_args(argv)
    if not 0 < args.baseline < args.exchanges:
        p.error("--baseline must be positive and below --exchanges")
    logging.disable(logging.INFO)
    with ScratchDatabase(args.postgres_url, scratch_name("dashboard")) as db:
        engine = make_engine(db.url)
        upgrade(engine)
        account = str(open_account(engine, "bench-dashboard", {"CAD": Decimal("1000")}))
        seed(engine, account, 0, args.baseline)
        some = engine.connect().execute(text("SELECT id FROM exchanges LIMIT 1")).scalar_one()
        with tempfile.TemporaryDirectory() as directory, bank_service(directory) as bank:
            small = measure(engine, db.url, args.repeat, str(some), bank)
            seed(engine, account, args.baseline, args.exchanges)
            large = measure(engine, db.url, args.repeat, str(some), bank)
        engine.dispose()
    out = sys.stdout.write
    out(f"\nOperators' pages and scrapes as history grows (PostgreSQL, {os.cpu_count()} cores; median of "
        f"{args.repeat}, in-process Flask test client)\n\n")
    out(f"| figure | {args.baseline:,} exchanges | {args.exchanges:,} exchanges | ratio |\n|---|---:|---:|---:|\n")
    for name in small:
        out(f"| {name} | {small[name]:.1f} ms | {large[name]:.1f} ms | {large[name] / small[name]:.2f}x |\n")
    out(f"\n  commands: {db.command}; seeded with set-based INSERT ... SELECT FROM generate_series\n")
    return 0
