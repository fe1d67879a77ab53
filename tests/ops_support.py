"""Helpers for the visibility and recovery tests: exchanges put in any state the honest way.

Every state is reached by running the real steps against the real bank service (with its
fault controls), never by writing the state column; only time is moved, by rewriting
`updated_at` / `claimed_until`.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from bank.client import BankClient
from domain import states as machine
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider
from domain.states import ExchangeState, RescuePolicy
from models import exchange_events, exchanges, outbox_messages
from models.base import utcnow
from services.claims import Claim, claim
from services.workflow import StepDeferred, Workflow, WorkflowConfig
from tests.workflow_support import accept, drive, run_step, state_of

S = ExchangeState

#: Every state an exchange can be left in, open ones first.
OPEN_STATES = tuple(s.value for s in machine.OPEN_STATES)
CLOSED_STATES = tuple(s.value for s in machine.ExchangeState if s in machine.TERMINAL_STATES)
#: No test here waits for a bank timeout, so a busy machine must not cause one.
BANK_TIMEOUT_SECONDS = 10.0


def make_workflow(engine: Engine, bank_url: str, **config: Any) -> Workflow:
    """The workflow as the in-process tests drive it: local steps fused, but the credit left to
    its own message (no hand-off), so a test can stop before it and fault the bank first.
    tests/test_step_graph.py and the process tests run the hand-off."""
    return Workflow(
        engine=engine,
        bank=BankClient(bank_url, connect_timeout=BANK_TIMEOUT_SECONDS, read_timeout=BANK_TIMEOUT_SECONDS),
        rates=TableRateProvider(DEFAULT_USD_VALUES),
        config=WorkflowConfig(lease=timedelta(seconds=5), credit_max_attempts=3,
                              **{"continue_inline": False, **config}),
    )


def handing_off(wf: Workflow) -> Workflow:
    """`wf` as production runs it: the worker runs the credit at once after the debit."""
    return dataclasses.replace(wf, config=dataclasses.replace(wf.config, continue_inline=True))


def stepwise(wf: Workflow) -> Workflow:
    """`wf` with one message per step, so every state on the way can be stopped in and looked at."""
    return dataclasses.replace(wf, config=dataclasses.replace(wf.config, fuse_local_steps=False,
                                                              continue_inline=False))


def exchange_in(wf: Workflow, account: uuid.UUID, state: str, amount: str = "100.00") -> uuid.UUID:
    """A new CAD -> USD exchange brought to `state` by its own steps (one message per step)."""
    wf = stepwise(wf)
    exchange_id = accept(wf.engine, account, amount)
    if state == "failed":
        # No USD rate: the quote fails and releases the hold.
        no_usd = {k: v for k, v in DEFAULT_USD_VALUES.items() if k != "USD"}
        run_step(dataclasses.replace(wf, rates=TableRateProvider(no_usd)), machine.QUOTE.actor, exchange_id)
    elif state != "pending":
        run_step(wf, machine.QUOTE.actor, exchange_id)
        if state != "quoted":
            run_step(wf, machine.DEBIT.actor, exchange_id)
        if state == "credited":
            run_step(wf, machine.CREDIT.actor, exchange_id)
        elif state == "completed":
            drive(wf, exchange_id)
        elif state in ("compensating", "refunded"):
            fail_credit_for_good(wf, exchange_id)
            if state == "refunded":
                drive(wf, exchange_id)
        elif state == "needs_attention":
            park(wf, exchange_id)
    assert state_of(wf.engine, exchange_id) == state
    return exchange_id


def credit_retrying(wf: Workflow, account: uuid.UUID, *, failures: int = 1, amount: str = "100.00") -> uuid.UUID:
    """A debited exchange whose credit got 503 from the bank `failures` times, and is waiting to retry."""
    exchange_id = exchange_in(wf, account, "debited", amount=amount)
    wf.bank.set_faults(down=True)
    try:
        for _ in range(failures):
            try:
                run_step(wf, machine.CREDIT.actor, exchange_id)
            except StepDeferred:
                continue
            raise AssertionError("the credit did not fail with the bank down")
    finally:
        wf.bank.reset_faults()
    return exchange_id


def fail_credit_for_good(wf: Workflow, exchange_id: uuid.UUID) -> None:
    """The bank answers 503 to every credit attempt: the debited exchange goes to compensating."""
    wf.bank.set_faults(down=True)
    try:
        for _ in range(wf.config.credit_max_attempts):
            try:
                run_step(wf, machine.CREDIT.actor, exchange_id)
            except StepDeferred:
                continue
    finally:
        wf.bank.reset_faults()


def kill_worker_mid_step(engine: Engine, exchange_id: uuid.UUID, *, step: str, expected: str,
                         worker: str = "dead-worker", idle: timedelta = timedelta(0)) -> None:
    """Claim the step for a worker that then dies: its lease runs out and it never writes again."""
    now = utcnow()
    with engine.begin() as conn:
        held = claim(conn, exchange_id, expected=S(expected), step=step, worker=worker,
                     lease=timedelta(seconds=1), now=now)
        assert isinstance(held, Claim), held
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                     .values(claimed_until=now - timedelta(seconds=1), updated_at=now - idle, progressed_at=now - idle))


def park(wf: Workflow, exchange_id: uuid.UUID) -> None:
    """A credit whose worker died mid-call, under the `park` rescue policy: it waits for a person."""
    kill_worker_mid_step(wf.engine, exchange_id, step="credit", expected="debited")
    parking = dataclasses.replace(wf, config=dataclasses.replace(wf.config,
                                                                 rescue_overrides={"credit": RescuePolicy.PARK}))
    run_step(parking, machine.CREDIT.actor, exchange_id)


def age(engine: Engine, exchange_id: uuid.UUID, by: timedelta) -> None:
    """Pretend the exchange's last change (and its steps' last outcome) happened `by` ago."""
    with engine.begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                     .values(updated_at=utcnow() - by, progressed_at=utcnow() - by))


def events(engine: Engine, exchange_id: uuid.UUID) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(exchange_events).where(exchange_events.c.exchange_id == exchange_id)
                            .order_by(exchange_events.c.id)).all()


def messages_for(engine: Engine, exchange_id: uuid.UUID) -> list[Any]:
    """The exchange's outbox messages, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_messages).order_by(outbox_messages.c.created_at)).all()
    return [row for row in rows if row.payload.get("exchange_id") == str(exchange_id)]


def row_of(engine: Engine, exchange_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(exchanges).where(exchanges.c.id == exchange_id)).one()


def bank_for(url: str) -> BankClient:
    return BankClient(url, connect_timeout=BANK_TIMEOUT_SECONDS, read_timeout=BANK_TIMEOUT_SECONDS)

