"""The exchange workflow under real processes and real faults.

Each test runs this run's PostgreSQL database, a Redis database of its own, the bank as a
subprocess, Dramatiq workers as `dramatiq jobs.worker` subprocesses and the outbox relay in
this process; it injects one fault (duplicate delivery, a bank that answers too late, a
worker killed after the bank paid, a bank that is down, random faults under load) and then
checks the money: one debit and at most one credit per exchange, here and at the bank.
Durations are never asserted; every wait has a deadline.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, select

from bank.client import BankClient
from domain import states as machine
from harness import invariants
from harness.outcome import postings_by_exchange, timeline, wait_settled
from harness.topology import Topology
from harness.waits import wait_until
from harness.worker_logs import WORKER_READY_MARKER, dropped_duplicates, step_results, worker_process_pid
from models import exchanges, outbox_messages
from services.accounts import get_account, open_account
from services.exchanges import ExchangeRequest, create_exchange
from tests.support.publishers import TwicePublisher
from tests.support.redis_topology import redis_topology

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

#: Deadline for a handful of exchanges to settle; generous, so only a stuck workflow fails it.
SETTLE_TIMEOUT_SECONDS = 60.0
#: Deadline for the 500-exchange run under random faults to settle.
CHAOS_SETTLE_TIMEOUT_SECONDS = 180.0
#: Dramatiq's exit code when one of its worker processes was killed.
DRAMATIQ_RET_KILLED = 1
#: The successes in a completed exchange's timeline: each step once, and the receipt.
COMPLETED_STEPS = Counter({("quote", "succeeded"): 1, ("debit", "succeeded"): 1, ("credit", "succeeded"): 1,
                           ("complete", "succeeded"): 1, ("receipt", "sent"): 1})


@pytest.fixture
def topology(pg_engine: Engine, postgres_url: str, tmp_path: Path) -> Iterator[Topology]:
    """The test's processes, all stopped at its end; their output is printed (shown if it failed)."""
    with redis_topology(pg_engine, postgres_url, tmp_path, "workflow") as topo:
        yield topo


def exchange_many(topo: Topology, accounts: list[uuid.UUID], count: int, *, seed: int = 1,
                  pairs: tuple[tuple[str, str], ...] = (("CAD", "USD"),)) -> list[uuid.UUID]:
    """`count` exchanges spread over `accounts`, with random amounts and pairs (reproducible)."""
    rng = random.Random(seed)
    ids = []
    for n in range(count):
        source, target = rng.choice(pairs)
        amount = Decimal(rng.randint(100, 50_000)) / 100
        request = ExchangeRequest(accounts[n % len(accounts)], source, target, amount)
        ids.append(create_exchange(topo.engine, request, queue=topo.queue).exchange_id)
    return ids


def assert_invariants(topo: Topology, bank: BankClient) -> None:
    report = invariants.check(topo.engine, bank=bank, settled=True)
    assert report.ok, f"{report}\n{topo.describe()}"


def assert_paid_once_each(bank: BankClient, ids: list[uuid.UUID]) -> None:
    applied = Counter(transfer.reference for transfer in bank.all_applied())
    assert applied == Counter({str(i): 1 for i in ids})


def assert_one_debit_and_one_credit_each(engine: Engine, ids: list[uuid.UUID]) -> None:
    postings = postings_by_exchange(engine)
    wrong = {i: dict(postings.get(i, {})) for i in ids if postings.get(i) != Counter({"debit": 1, "credit": 1})}
    assert not wrong, f"exchanges without exactly one debit and one credit: {wrong}"


def steps_of(engine: Engine) -> dict[uuid.UUID, Counter[tuple[str, str]]]:
    result: dict[uuid.UUID, Counter[tuple[str, str]]] = {}
    for event in timeline(engine):
        result.setdefault(event.exchange_id, Counter())[(event.step, event.outcome)] += 1
    return result


# 1. Duplicate delivery -------------------------------------------------------------------


def test_every_message_delivered_twice_advances_each_exchange_once(topology: Topology) -> None:
    bank = topology.start_bank()
    # --verbose: the actors log each delivery's result at DEBUG, which the test counts.
    workers = [topology.start_worker(name, verbose=True) for name in ("a", "b")]
    relay = topology.start_relay_thread(wrap=TwicePublisher)
    accounts = [open_account(topology.engine, f"Twice {n}", {"CAD": Decimal("20000.00")}) for n in range(3)]

    ids = exchange_many(topology, accounts, 30)
    states = wait_settled(topology, SETTLE_TIMEOUT_SECONDS)

    assert states == Counter({"completed": 30})
    assert_invariants(topology, bank)
    assert_one_debit_and_one_credit_each(topology.engine, ids)
    assert_paid_once_each(bank, ids)
    # Every outbox message reached Redis twice under its one id...
    publisher = relay.relay.publisher
    assert isinstance(publisher, TwicePublisher)
    with topology.engine.connect() as conn:
        rows = conn.execute(select(outbox_messages.c.id, outbox_messages.c.actor, outbox_messages.c.published_at)).all()
    messages = publisher.published
    # One relayed message per exchange, the quote's (the debit runs in its transaction); the worker
    # ran the credit at once and marked its message done, unless a lease passed first.
    quotes = {r.id for r in rows if r.actor == machine.QUOTE.actor}
    assert len(quotes) == 30 and quotes <= set(messages)
    assert set(messages) - quotes <= {r.id for r in rows if r.actor == machine.CREDIT.actor}
    assert all(r.published_at is not None for r in rows)
    assert set(messages.values()) == {2}
    # ...and the timeline shows each step done once: the other copy was skipped by the claim.
    successes = {i: Counter({k: n for k, n in steps.items() if k[1] in {"succeeded", "sent"}})
                 for i, steps in steps_of(topology.engine).items()}
    doubled = {i: steps for i, steps in successes.items() if steps != COMPLETED_STEPS}
    assert not doubled, f"exchanges whose timeline is not one success per step: {doubled}"

    # Each of the 2 x 150 copies ended once: one advanced its exchange, the other found it done
    # (skipped), lost its claim, or was dropped by Dramatiq's consumer because the first copy's
    # acknowledgement had already deleted the message body (same id).
    def endings() -> int:
        results = step_results(*workers)
        return sum(results.values()) + dropped_duplicates(*workers)

    wait_until(lambda: topology.queued() == 0 and endings() >= 2 * len(messages), SETTLE_TIMEOUT_SECONDS,
               what=lambda: f"every copy to be consumed: {step_results(*workers)}, "
                            f"{dropped_duplicates(*workers)} dropped, {topology.queued()} queued")
    results = step_results(*workers)
    dropped = dropped_duplicates(*workers)
    print(f"deliveries: {dict(results)}, dropped duplicates: {dropped}")
    assert results["advanced"] == len(messages)
    assert results["skipped"] + results["lost_claim"] + dropped == len(messages)
    assert results["skipped"] > 0, "no duplicate reached a step"
    assert set(results) <= {"advanced", "skipped", "lost_claim"}


# 2. The bank answers too late ----------------------------------------------------------------


def test_credits_that_time_out_after_the_bank_applied_them_are_replayed_and_paid_once(
    topology: Topology,
) -> None:
    bank = topology.start_bank()
    # The bank applies the next 3 transfers and answers after 3 s; the client gives up after 1 s.
    bank.set_faults(timeout_after_apply_next=3, stall_ms=3000)
    topology.start_worker("a", extra={"CREDIT_MAX_ATTEMPTS": "5"})
    topology.start_relay_thread()
    account = open_account(topology.engine, "Late Answers", {"CAD": Decimal("1000.00")})

    ids = exchange_many(topology, [account], 3)
    states = wait_settled(topology, SETTLE_TIMEOUT_SECONDS)

    assert states == Counter({"completed": 3})
    assert requests.get(topology.bank_url + "/_faults", timeout=5).json()["timeout_after_apply_next"] == 0
    assert_invariants(topology, bank)
    assert_one_debit_and_one_credit_each(topology.engine, ids)
    assert_paid_once_each(bank, ids)
    events = [e for e in timeline(topology.engine) if e.step == "credit"]
    retrying = [e for e in events if e.outcome == "retrying"]
    assert len(retrying) == 3, retrying
    for event in retrying:
        assert event.detail and event.detail["outcome_unknown"] is True
        assert event.error and "did not answer within 1.0s" in event.error
    timed_out = {e.exchange_id for e in retrying}
    for exchange_id in ids:
        [credited] = [e for e in events if e.exchange_id == exchange_id and e.outcome == "succeeded"]
        assert credited.detail is not None
        # The retry after a timeout got the bank's first answer back, not a second payment.
        assert credited.detail["replayed"] is (exchange_id in timed_out), credited


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# 3. A worker killed after the bank paid -------------------------------------------------------


def test_a_worker_killed_between_the_bank_and_the_commit_is_taken_over_and_credits_once(
    topology: Topology,
) -> None:
    bank = topology.start_bank()
    doomed = topology.start_worker("a", failpoints="step.credit.after_bank=kill")
    doomed_pid = worker_process_pid(doomed)
    topology.start_relay_thread()
    account = open_account(topology.engine, "Killed Mid-Credit", {"CAD": Decimal("1000.00")})

    ids = exchange_many(topology, [account], 3)
    assert doomed.wait_exit(SETTLE_TIMEOUT_SECONDS) == DRAMATIQ_RET_KILLED
    # Gone, and not by its own hand: the main process exits RET_KILLED when a child dies of a signal.
    # (Its "exited unexpectedly (code -9)" line can be lost: Dramatiq's log relay stops as it exits.)
    assert not process_exists(doomed_pid)
    # The bank paid, our ledger has not heard of it: the exchange is still debited, claimed by the dead.
    paid = {uuid.UUID(t.reference) for t in bank.all_applied()}
    assert paid, "the worker died before any bank call"
    with topology.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(exchanges).where(exchanges.c.id.in_(paid)))}
    for exchange_id in paid:
        assert rows[exchange_id].state == "debited"
        assert f":{doomed_pid}:" in (rows[exchange_id].claimed_by or "")
    assert not any(postings_by_exchange(topology.engine).get(i, Counter())["credit"] for i in paid)

    # Its messages come back from Redis once its heartbeat is 5 s old, to the next worker.
    rescuer = topology.start_worker("b")
    rescuer_pid = worker_process_pid(rescuer)
    states = wait_settled(topology, SETTLE_TIMEOUT_SECONDS)

    assert states == Counter({"completed": 3})
    assert_invariants(topology, bank)
    assert_one_debit_and_one_credit_each(topology.engine, ids)
    assert_paid_once_each(bank, ids)
    for exchange_id in paid:
        [credited] = [e for e in timeline(topology.engine, exchange_id)
                      if e.step == "credit" and e.outcome == "succeeded"]
        assert credited.detail and credited.detail["replayed"] is True, credited
        assert credited.attempt >= 2, credited  # the dead worker's claim was attempt 1
        assert credited.worker and f":{rescuer_pid}:" in credited.worker, credited


def test_a_worker_killed_after_the_debit_before_its_handed_off_credit_loses_nothing(topology: Topology) -> None:
    bank = topology.start_bank()
    doomed = topology.start_worker("a", failpoints="step.handoff.before_continue=kill")
    relay = topology.start_relay_thread()
    account = open_account(topology.engine, "Killed After Debit", {"CAD": Decimal("1000.00")})

    ids = exchange_many(topology, [account], 1)
    assert doomed.wait_exit(SETTLE_TIMEOUT_SECONDS) == DRAMATIQ_RET_KILLED
    # Quoted and debited in one commit, with the credit's message, which no one has sent yet, and
    # the credit's claim for the dead worker, which expires when that message becomes due.
    with topology.engine.connect() as conn:
        row = conn.execute(select(exchanges).where(exchanges.c.id == ids[0])).one()
        credit = conn.execute(select(outbox_messages).where(outbox_messages.c.actor == machine.CREDIT.actor)).one()
    assert row.state == "debited" and row.step == "credit" and row.claimed_by is not None
    assert row.claimed_until == credit.available_at
    assert credit.published_at is None and credit.available_at > credit.created_at
    assert bank.all_applied() == []

    # A lease later the relay sends it, and the next worker credits it once.
    topology.start_worker("b")
    assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == Counter({"completed": 1})
    assert relay.relay.totals["published"] == 2  # the quote's message, then the credit's
    assert steps_of(topology.engine)[ids[0]][("credit", "rescued")] == 1  # its policy: retry
    assert_invariants(topology, bank)
    assert_one_debit_and_one_credit_each(topology.engine, ids)
    assert_paid_once_each(bank, ids)


# 4. The bank is down for good ---------------------------------------------------------------


def test_exchanges_are_refunded_when_the_bank_stays_down(topology: Topology) -> None:
    bank = topology.start_bank()
    bank.set_faults(down=True)
    topology.start_worker("a", extra={"CREDIT_MAX_ATTEMPTS": "3"})
    topology.start_relay_thread()
    account = open_account(topology.engine, "Bank Down", {"CAD": Decimal("1000.00")})
    before = get_account(topology.engine, account).balances

    ids = exchange_many(topology, [account], 3)
    states = wait_settled(topology, SETTLE_TIMEOUT_SECONDS)

    assert states == Counter({"refunded": 3})
    assert get_account(topology.engine, account).balances == before
    assert bank.all_applied() == []
    assert_invariants(topology, bank)
    postings = postings_by_exchange(topology.engine)
    for exchange_id in ids:
        assert postings[exchange_id] == Counter({"debit": 1, "refund": 1})
        events = [(e.step, e.outcome, e.attempt) for e in timeline(topology.engine, exchange_id)]
        assert events == [("accept", "accepted", 0), ("quote", "succeeded", 1), ("debit", "succeeded", 1),
                          ("credit", "retrying", 1), ("credit", "retrying", 2), ("credit", "failed", 3),
                          ("compensate", "compensated", 1), ("receipt", "sent", 1)]
        for event in timeline(topology.engine, exchange_id):
            if event.step == "credit":
                assert event.error and "bank answered 503" in event.error, event
                assert not (event.detail or {}).get("outcome_unknown"), event


# 5. Random faults under load ------------------------------------------------------------------


def test_five_hundred_exchanges_under_random_bank_faults_keep_every_invariant(topology: Topology) -> None:
    bank = topology.start_bank()
    bank.set_faults(timeout_after_apply_rate=0.1, error_rate=0.1, stall_ms=1500, latency_ms=5)
    workers = [topology.start_worker(str(n), extra={"CREDIT_MAX_ATTEMPTS": "6"}, wait=False) for n in range(4)]
    for worker in workers:
        worker.wait_for_output(WORKER_READY_MARKER)
    topology.start_relay_thread()
    funding = {"CAD": Decimal("100000.00"), "EUR": Decimal("100000.00")}
    accounts = [open_account(topology.engine, f"Chaos {n}", funding) for n in range(20)]

    started = time.monotonic()
    ids = exchange_many(topology, accounts, 500, seed=5, pairs=(("CAD", "USD"), ("CAD", "EUR"), ("EUR", "USD")))
    states = wait_settled(topology, CHAOS_SETTLE_TIMEOUT_SECONDS)
    elapsed = time.monotonic() - started

    events = timeline(topology.engine)
    credit_outcomes = Counter(e.outcome for e in events if e.step == "credit")
    replayed = sum(1 for e in events if e.step == "credit" and e.outcome == "succeeded" and e.detail
                   and e.detail.get("replayed"))
    print(f"500 exchanges settled in {elapsed:.1f}s: states {dict(states)}; credit outcomes {dict(credit_outcomes)}; "
          f"{replayed} credits answered by a replay; {len(bank.all_applied())} transfers at the bank")
    parked = states.get("needs_attention", 0)
    if parked:
        with topology.engine.connect() as conn:
            reasons = conn.execute(select(exchanges.c.id, exchanges.c.last_error)
                                   .where(exchanges.c.state == "needs_attention")).all()
        pytest.fail(f"{parked} exchanges parked for a person: {reasons}")
    assert sum(states.values()) == len(ids) == 500
    assert set(states) <= {"completed", "refunded", "failed"}
    assert_invariants(topology, bank)
