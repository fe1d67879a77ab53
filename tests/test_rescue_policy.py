"""What happens when a step's claim expires without a result: each rescue policy, in-process."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update

from bank.client import BankClient
from domain import states as machine
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider
from domain.states import RescuePolicy
from harness import invariants
from models import exchange_events, exchanges
from models.base import utcnow
from services.accounts import open_account
from services.claims import Claim, claim
from services.workflow import StepResult, Workflow, WorkflowConfig
from tests.workflow_support import accept, drive, run_step, state_of


def workflow(engine: Engine, bank_url: str, policy: RescuePolicy | None = None) -> Workflow:
    return Workflow(
        engine=engine,
        bank=BankClient(bank_url, connect_timeout=0.5, read_timeout=0.5),
        rates=TableRateProvider(DEFAULT_USD_VALUES),
        config=WorkflowConfig(lease=timedelta(seconds=5), continue_inline=False,
                              rescue_overrides={} if policy is None else {"credit": policy}),
    )


def debited_exchange_abandoned_by_a_dead_worker(wf: Workflow, *, bank_applied: bool) -> uuid.UUID:
    """A worker claimed the credit, maybe reached the bank, and died; its lease has run out."""
    account = open_account(wf.engine, "Rescue Customer", {"CAD": Decimal("500.00")})
    exchange_id = accept(wf.engine, account, "100.00")
    run_step(wf, machine.QUOTE.actor, exchange_id)
    run_step(wf, machine.DEBIT.actor, exchange_id)
    with wf.engine.begin() as conn:
        held = claim(conn, exchange_id, expected="debited", step="credit",  # type: ignore[arg-type]
                     worker="dead-worker", lease=timedelta(seconds=5), now=utcnow())
    assert isinstance(held, Claim)
    if bank_applied:
        assert held.to_amount is not None
        wf.bank.transfer(key=f"{exchange_id}:credit", reference=str(exchange_id), account=str(account),
                         currency="USD", amount=held.to_amount)
    with wf.engine.begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                     .values(claimed_until=utcnow() - timedelta(seconds=1)))
    return exchange_id


def outcomes(engine: Engine, exchange_id: uuid.UUID) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.step, r.outcome) for r in conn.execute(
            select(exchange_events.c.step, exchange_events.c.outcome)
            .where(exchange_events.c.exchange_id == exchange_id).order_by(exchange_events.c.id))]


def assert_money_is_whole(wf: Workflow) -> None:
    report = invariants.check(wf.engine, bank=wf.bank, settled=False)
    assert report.ok, str(report)


@pytest.mark.parametrize("bank_applied", [True, False], ids=["bank-paid", "bank-never-reached"])
def test_retry_policy_runs_the_credit_again_and_the_bank_pays_once(
    engine: Engine, bank_url: str, bank_applied: bool
) -> None:
    wf = workflow(engine, bank_url)  # the declared policy of the credit step
    exchange_id = debited_exchange_abandoned_by_a_dead_worker(wf, bank_applied=bank_applied)
    assert run_step(wf, machine.CREDIT.actor, exchange_id) is StepResult.ADVANCED
    assert drive(wf, exchange_id) == "completed"
    assert ("credit", "rescued") in outcomes(engine, exchange_id)
    assert len(wf.bank.all_applied()) == 1
    assert_money_is_whole(wf)


def test_park_policy_leaves_the_exchange_for_a_person_with_the_reason_on_the_dashboard(
    engine: Engine, bank_url: str, anonymous_client: FlaskClient
) -> None:
    wf = workflow(engine, bank_url, RescuePolicy.PARK)
    exchange_id = debited_exchange_abandoned_by_a_dead_worker(wf, bank_applied=True)
    assert run_step(wf, machine.CREDIT.actor, exchange_id) is StepResult.PARKED
    assert state_of(engine, exchange_id) == "needs_attention"
    with engine.connect() as conn:
        reason = conn.execute(select(exchanges.c.last_error).where(exchanges.c.id == exchange_id)).scalar_one()
    assert "dead-worker" in reason and "park" in reason
    page = anonymous_client.get("/ops/").get_data(as_text=True)
    assert str(exchange_id) in page and "dead-worker" in page
    assert_money_is_whole(wf)
    # The bank can answer, so the parked credit is resolved from its record: it had paid.
    assert run_step(wf, machine.RESOLVE.actor, exchange_id) is StepResult.ADVANCED
    assert drive(wf, exchange_id) == "completed"
    assert len(wf.bank.all_applied()) == 1
    assert_money_is_whole(wf)


def test_a_parked_credit_the_bank_never_applied_is_voided_and_refunded(engine: Engine, bank_url: str) -> None:
    wf = workflow(engine, bank_url, RescuePolicy.PARK)
    exchange_id = debited_exchange_abandoned_by_a_dead_worker(wf, bank_applied=False)
    assert run_step(wf, machine.CREDIT.actor, exchange_id) is StepResult.PARKED
    assert run_step(wf, machine.RESOLVE.actor, exchange_id) is StepResult.ADVANCED
    assert drive(wf, exchange_id) == "refunded"
    assert wf.bank.all_applied() == []
    assert_money_is_whole(wf)


def test_fail_policy_voids_at_the_bank_and_refunds(engine: Engine, bank_url: str) -> None:
    wf = workflow(engine, bank_url, RescuePolicy.FAIL)
    exchange_id = debited_exchange_abandoned_by_a_dead_worker(wf, bank_applied=False)
    assert run_step(wf, machine.CREDIT.actor, exchange_id) is StepResult.ADVANCED
    assert drive(wf, exchange_id) == "refunded"
    assert wf.bank.lookup(f"{exchange_id}:credit").status == "voided"  # type: ignore[union-attr]
    # A late call of the dead worker cannot pay any more: the key is voided.
    assert_money_is_whole(wf)


def test_fail_policy_never_refunds_what_the_bank_already_paid(engine: Engine, bank_url: str) -> None:
    wf = workflow(engine, bank_url, RescuePolicy.FAIL)
    exchange_id = debited_exchange_abandoned_by_a_dead_worker(wf, bank_applied=True)
    run_step(wf, machine.CREDIT.actor, exchange_id)
    assert drive(wf, exchange_id) == "completed"
    assert len(wf.bank.all_applied()) == 1
    assert_money_is_whole(wf)
