"""Claims a stale worker cannot act on: processes frozen mid-step, then woken.

A failpoint with the action `stop` makes a process SIGSTOP itself at the worst moment: a
worker after the bank paid and before its commit, a worker inside the debit's transaction,
a relay after publishing a batch and before marking it published. Another process finishes
the work while it is frozen; then it is woken (SIGCONT), and its late write must change
nothing: one debit and one credit per exchange, here and at the bank.

Real PostgreSQL, a redis-server of the test's own, the bank, Dramatiq workers and relays as
subprocesses. Durations are never asserted; every wait has a deadline.
"""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select

from bank.client import BankClient
from domain import states as machine
from harness import invariants
from harness.frozen import STOPPED, process_state
from harness.outcome import exchange_states, postings_by_exchange, wait_settled
from harness.processes import Process
from harness.topology import Topology, application_name
from harness.waits import wait_until
from harness.worker_logs import step_deliveries, worker_process_pid
from models import outbox_messages
from models.base import utcnow
from services.accounts import get_account, open_account
from tests.support.zombies import (
    Scene,
    backends,
    events_of,
    exchange_row,
    in_transaction,
    money_snapshot,
    start_exchange,
)

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

#: Deadline for the exchanges to settle; generous, so only a stuck workflow fails it.
SETTLE_TIMEOUT_SECONDS = 60.0
#: Deadline for a process to reach its failpoint (it starts, then runs the steps before it).
STOP_TIMEOUT_SECONDS = 60.0
#: Deadline for a woken process to do what it does next (fail its commit, record its lost claim).
WAKE_TIMEOUT_SECONDS = 30.0
#: PostgreSQL aborts a frozen process's open transaction after 2 s (15 s by default), which
#: frees its row locks for whoever takes its work over.
SHORT_IDLE_IN_TRANSACTION = {"DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "2000"}
#: The frozen worker's PostgreSQL connections carry this name (libpq reads PGAPPNAME).
ZOMBIE_APP_NAME = "fx-test-zombie-worker"
#: What the relay logs when a batch fails on the database.
RELAY_BATCH_FAILED = "relay batch failed (database:"
#: How a woken process learns that PostgreSQL ended its connection: the server's reason, or
#: libpq's words when the reset socket loses that reason before the client reads it.
CONNECTION_ENDED = ("terminating connection due to idle-in-transaction timeout",
                    "server closed the connection unexpectedly")
#: What Dramatiq logs when a step raises, and when its Retries middleware sends it again.
#: The debit runs in the quote message's transaction: that message is the one that fails and is retried.
DEBIT_FAILED = f"Failed to process message {machine.QUOTE.actor}("
RETRYING = "Retrying message"


def assert_money_whole(topology: Topology, bank: BankClient, ids: list[uuid.UUID]) -> None:
    """Every exchange completed, debited and credited once in our ledger, paid once at the bank."""
    assert exchange_states(topology.engine) == Counter({"completed": len(ids)})
    postings = postings_by_exchange(topology.engine)
    assert {i: postings.get(i) for i in ids} == {i: Counter({"debit": 1, "credit": 1}) for i in ids}
    assert Counter(t.reference for t in bank.all_applied()) == Counter({str(i): 1 for i in ids})
    report = invariants.check(topology.engine, bank=bank, settled=True)
    assert report.ok, f"{report}\n{topology.describe()}"


def assert_balances(engine: Engine, account: uuid.UUID, exchange_id: uuid.UUID, *, funded: str, spent: str) -> None:
    to_amount = exchange_row(engine, exchange_id).to_amount
    got = {(b.currency, b.available, b.held) for b in get_account(engine, account).balances}
    assert got == {("CAD", Decimal(funded) - Decimal(spent), Decimal(0)), ("USD", to_amount, Decimal(0))}


def cut_off(process: Process) -> bool:
    """The process says PostgreSQL ended the connection its transaction was on."""
    output = process.output()
    return any(reason in output for reason in CONNECTION_ENDED)


# 1. Frozen after the bank paid, before the credit's commit ------------------------------------


def test_a_worker_frozen_after_the_bank_paid_loses_its_claim_and_its_late_credit_changes_nothing(
    scene: Scene,
) -> None:
    topo = scene.topology
    bank = topo.start_bank()
    zombie = topo.start_worker("zombie", failpoints="step.credit.after_bank=stop", verbose=True)
    zombie_pid = scene.frozen.watch(worker_process_pid(zombie))
    topo.start_relay_thread()
    account = open_account(topo.engine, "Zombie Credit", {"CAD": Decimal("500.00")})
    exchange_id = start_exchange(topo, account)

    scene.frozen.wait_stopped(zombie_pid, STOP_TIMEOUT_SECONDS, scene.describe)
    # The bank paid; our ledger has not heard of it: debited, claimed by the frozen worker.
    assert [t.reference for t in bank.all_applied()] == [str(exchange_id)]
    frozen = exchange_row(topo.engine, exchange_id)
    assert frozen.state == "debited" and f":{zombie_pid}:" in (frozen.claimed_by or ""), frozen
    assert postings_by_exchange(topo.engine)[exchange_id] == Counter({"debit": 1})
    # The workers' STEP_LEASE_SECONDS is 3 (FAST_WORKFLOW_ENV): let the frozen worker's lease run out.
    wait_until(lambda: exchange_row(topo.engine, exchange_id).claimed_until < utcnow(), WAKE_TIMEOUT_SECONDS,
               what="the frozen worker's lease to expire")

    # The frozen worker ran the credit at once after the debit (a hand-off): the credit's own
    # outbox message became due a lease later, and the relay sends it to the rescuer, not a
    # reconciler pass. That is the message the zombie was running, so the test can show the
    # one credit the zombie held was finished by another worker; and it needs no clock games
    # with `stuck_after`.
    rescuer = topo.start_worker("rescuer", verbose=True)
    rescuer_pid = worker_process_pid(rescuer)
    assert wait_settled(topo, SETTLE_TIMEOUT_SECONDS) == Counter({"completed": 1})
    settled = money_snapshot(topo.engine, bank)

    scene.frozen.resume(zombie_pid)
    wait_until(lambda: events_of(topo.engine, exchange_id, "credit", "lost_claim"),
               WAKE_TIMEOUT_SECONDS, what=lambda: f"the woken worker to lose its claim: {zombie.describe()}")

    # Its late write changed nothing: no second credit, no second payment, the same balances.
    assert money_snapshot(topo.engine, bank) == settled
    assert_money_whole(topo, bank, [exchange_id])
    assert_balances(topo.engine, account, exchange_id, funded="500.00", spent="100.00")
    assert zombie.is_running() and process_state(zombie_pid) != STOPPED, zombie.describe()
    # The timeline tells it: the rescuer took the expired claim over and was paid by the
    # bank's replay of the frozen worker's call; the woken worker's result was discarded.
    [rescued] = events_of(topo.engine, exchange_id, "credit", "rescued")
    assert rescued.worker and f":{rescuer_pid}:" in rescued.worker, rescued
    assert rescued.error and frozen.claimed_by in rescued.error, rescued
    [credited] = events_of(topo.engine, exchange_id, "credit", "succeeded")
    assert credited.worker and f":{rescuer_pid}:" in credited.worker, credited
    assert credited.detail and credited.detail["replayed"] is True, credited
    [lost] = events_of(topo.engine, exchange_id, "credit", "lost_claim")
    assert lost.worker and f":{zombie_pid}:" in lost.worker, lost
    assert lost.attempt == frozen.attempt and lost.error and "superseded" in lost.error, lost
    assert lost.message_id == credited.message_id, "the rescuer ran the frozen worker's own message"


# 2. Frozen inside the debit's transaction -------------------------------------------------------


def test_a_worker_frozen_inside_the_debit_transaction_is_cut_off_and_the_debit_posts_once(scene: Scene) -> None:
    topo = scene.topology
    bank = topo.start_bank()
    zombie = topo.start_worker("zombie", failpoints="step.debit.before_commit=stop", verbose=True,
                               extra={**SHORT_IDLE_IN_TRANSACTION, "PGAPPNAME": ZOMBIE_APP_NAME})
    zombie_pid = scene.frozen.watch(worker_process_pid(zombie))
    topo.start_relay_thread()
    account = open_account(topo.engine, "Zombie Debit", {"CAD": Decimal("500.00")})
    exchange_id = start_exchange(topo, account)

    scene.frozen.wait_stopped(zombie_pid, STOP_TIMEOUT_SECONDS, scene.describe)
    # Its quote and debit (one transaction) are written but not committed: nobody sees them...
    assert exchange_row(topo.engine, exchange_id).state == "pending"
    assert exchange_id not in postings_by_exchange(topo.engine)
    # ...and PostgreSQL ends the frozen transaction, freeing the exchange's and the balance's rows.
    wait_until(lambda: not in_transaction(topo.engine, ZOMBIE_APP_NAME), WAKE_TIMEOUT_SECONDS,
               what=lambda: f"PostgreSQL to abort the frozen transaction: {backends(topo.engine, ZOMBIE_APP_NAME)}")

    # The quote message (the debit runs in its transaction) comes back to the rescuer by Dramatiq's
    # redelivery (heartbeat 5 s, maintenance on every command: FAST_WORKFLOW_ENV), as in the credit test.
    rescuer = topo.start_worker("rescuer", verbose=True, extra=SHORT_IDLE_IN_TRANSACTION)
    assert wait_settled(topo, SETTLE_TIMEOUT_SECONDS) == Counter({"completed": 1})
    settled = money_snapshot(topo.engine, bank)

    scene.frozen.resume(zombie_pid)
    # Its commit fails on the connection PostgreSQL ended; Dramatiq retries the message,
    # and the retry finds the quote and debit done and acknowledges it.
    wait_until(lambda: step_deliveries(zombie, rescuer)[(machine.QUOTE.actor, str(exchange_id), "skipped")] == 1,
               WAKE_TIMEOUT_SECONDS, what=lambda: f"the retried debit to be skipped: {scene.describe()}")
    assert DEBIT_FAILED in zombie.output() and RETRYING in zombie.output(), zombie.describe()
    assert cut_off(zombie), zombie.describe()
    debits = Counter(result for (actor, ident, result) in step_deliveries(zombie, rescuer).elements()
                     if actor == machine.QUOTE.actor and ident == str(exchange_id))
    assert debits == Counter({"advanced": 1, "skipped": 1}), debits

    assert money_snapshot(topo.engine, bank) == settled
    assert_money_whole(topo, bank, [exchange_id])
    assert_balances(topo.engine, account, exchange_id, funded="500.00", spent="100.00")
    [debited] = events_of(topo.engine, exchange_id, "debit", "succeeded")
    assert debited.worker and f":{worker_process_pid(rescuer)}:" in debited.worker, debited
    assert zombie.is_running() and process_state(zombie_pid) != STOPPED, zombie.describe()


# 3. A relay frozen between publishing a batch and committing it -----------------------------------


def unpublished_quotes(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(outbox_messages)
            .where(outbox_messages.c.actor == machine.QUOTE.actor, outbox_messages.c.published_at.is_(None))
        ).scalar_one()


def test_a_relay_frozen_before_its_commit_is_cut_off_and_its_republished_batch_moves_money_once(
    scene: Scene,
) -> None:
    topo = scene.topology
    bank = topo.start_bank()
    workers = [topo.start_worker(name, verbose=True) for name in ("a", "b")]
    accounts = [open_account(topo.engine, f"Relay Zombie {n}", {"CAD": Decimal("500.00")}) for n in range(4)]
    ids = [start_exchange(topo, account) for account in accounts]

    zombie = topo.start_relay("zombie", failpoints="relay.after_publish=stop", extra=SHORT_IDLE_IN_TRANSACTION)
    app_name = application_name(zombie)
    scene.frozen.wait_stopped(zombie.pid, STOP_TIMEOUT_SECONDS, scene.describe)
    # Its batch (every quote message) reached Redis and the workers ran each exchange to its end
    # from it (the debit in the quote's transaction, then the credit at once), but the batch was
    # never marked published.
    wait_until(lambda: exchange_states(topo.engine) == Counter({"completed": len(ids)}), SETTLE_TIMEOUT_SECONDS,
               what=lambda: f"the workers to finish the frozen relay's batch: {exchange_states(topo.engine)}")
    assert unpublished_quotes(topo.engine) == len(ids)
    # PostgreSQL ends the frozen transaction, so the batch's rows are free to claim again.
    wait_until(lambda: not in_transaction(topo.engine, app_name), WAKE_TIMEOUT_SECONDS,
               what=lambda: f"PostgreSQL to abort the frozen relay's transaction: {backends(topo.engine, app_name)}")
    frozen_backends = set(backends(topo.engine, app_name))

    topo.start_relay_thread()  # republishes the batch, then relays every later step
    assert wait_settled(topo, SETTLE_TIMEOUT_SECONDS) == Counter({"completed": len(ids)})

    # Both copies of each quote message were processed: one quoted and debited, the other found it done.
    def quote_deliveries() -> dict[str, Counter[str]]:
        found: dict[str, Counter[str]] = {str(i): Counter() for i in ids}
        for (actor, ident, result), n in step_deliveries(*workers).items():
            if actor == machine.QUOTE.actor:
                found.setdefault(ident, Counter())[result] += n
        return found

    both = {str(i): Counter({"advanced": 1, "skipped": 1}) for i in ids}
    wait_until(lambda: quote_deliveries() == both, SETTLE_TIMEOUT_SECONDS,
               what=lambda: f"both copies of each quote to be processed: {quote_deliveries()}")
    settled = money_snapshot(topo.engine, bank)

    # Woken only now that nothing is left to publish: its failpoint is still armed, and
    # would stop it again after its next non-empty batch.
    scene.frozen.resume(zombie.pid)
    # Its commit fails on the connection PostgreSQL ended; it carries on with a new connection.
    wait_until(lambda: RELAY_BATCH_FAILED in zombie.output(), WAKE_TIMEOUT_SECONDS,
               what=lambda: f"the woken relay's commit to fail: {zombie.describe()}")
    wait_until(lambda: set(backends(topo.engine, app_name)) - frozen_backends, WAKE_TIMEOUT_SECONDS,
               what=lambda: f"the woken relay to reconnect: {backends(topo.engine, app_name)}, {zombie.describe()}")
    assert zombie.is_running() and process_state(zombie.pid) != STOPPED, zombie.describe()
    assert cut_off(zombie), zombie.describe()

    assert money_snapshot(topo.engine, bank) == settled
    assert_money_whole(topo, bank, ids)
    for account, exchange_id in zip(accounts, ids, strict=True):
        assert_balances(topo.engine, account, exchange_id, funded="500.00", spent="100.00")
    assert zombie.stop() == 0, zombie.describe()  # its loop was alive: SIGTERM ends it cleanly
