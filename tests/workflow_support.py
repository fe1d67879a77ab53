"""Helpers for driving the workflow's steps in-process, as a broker would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, select

from bank.server import create_app as create_bank
from domain import states as machine
from domain.states import TERMINAL_STATES
from harness.wsgi import serving
from models import exchanges
from services.exchanges import ExchangeRequest, create_exchange
from services.workflow import STEPS, Delivery, StepDeferred, StepResult, Workflow


@contextmanager
def bank_server(tmp_path: Path) -> Iterator[str]:
    """The real bank service on a free port, in a thread, with its own SQLite file."""
    with serving(create_bank(str(tmp_path / "bank.db"), seed=7), name="bank") as url:
        yield url


def state_of(engine: Engine, exchange_id: uuid.UUID) -> str:
    with engine.connect() as conn:
        return conn.execute(select(exchanges.c.state).where(exchanges.c.id == exchange_id)).scalar_one()


def run_step(wf: Workflow, actor: str, exchange_id: uuid.UUID, worker: str = "test-worker",
             epoch: int | None = None) -> StepResult:
    """Deliver the step as the newest message for it would be (the exchange's current step epoch),
    or as a message of `epoch`."""
    if epoch is None:
        with wf.engine.connect() as conn:
            epoch = conn.execute(select(exchanges.c.step_epoch).where(exchanges.c.id == exchange_id)).scalar_one()
    return STEPS[actor](wf, Delivery(exchange_id, worker, uuid.uuid4(), epoch=epoch))


def drive(wf: Workflow, exchange_id: uuid.UUID, *, max_steps: int = 50) -> str:
    """Run steps as the broker would, retrying deferred ones at once, until a terminal state."""
    for _ in range(max_steps):
        state = state_of(wf.engine, exchange_id)
        if state in TERMINAL_STATES or state == "needs_attention":
            run_step(wf, machine.RECEIPT.actor, exchange_id)
            return state
        try:
            run_step(wf, machine.STEP_FOR_STATE[machine.ExchangeState(state)].actor, exchange_id)
        except StepDeferred:
            continue
    raise AssertionError(f"exchange {exchange_id} did not finish in {max_steps} steps")


def accept(engine: Engine, account: uuid.UUID, amount: str = "100.00", source: str = "CAD",
           target: str = "USD") -> uuid.UUID:
    accepted = create_exchange(engine, ExchangeRequest(account, source, target, Decimal(amount)), queue="exchanges")
    return accepted.exchange_id
