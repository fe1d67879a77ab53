"""Answers the bank client does not expect: each ends parked with its reason, within the credit's
attempt budget, and an operator's action settles it once the bank makes sense again."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from bank.client import BankAnswerUnreadable
from domain import states as machine
from harness import invariants
from ops.actions import ActionRefused, force_compensation, retry_step
from services.workflow import StepDeferred, StepResult, Workflow, credit_key
from tests.ops_support import events, exchange_in, row_of
from tests.workflow_support import drive, run_step, state_of


def credit_until_it_stops_deferring(wf: Workflow, exchange_id: uuid.UUID) -> StepResult:
    for _ in range(wf.config.credit_max_attempts):
        try:
            return run_step(wf, machine.CREDIT.actor, exchange_id)
        except StepDeferred:
            continue
    raise AssertionError("the credit kept deferring past its attempt budget")


def test_a_bank_answer_the_client_cannot_read_is_an_unknown_outcome_not_a_crash(wf: Workflow) -> None:
    wf.bank.set_faults(garbled=True)
    try:
        with pytest.raises(BankAnswerUnreadable, match="body we cannot read"):
            wf.bank.transfer(key="k-1", reference="r-1", account="a", currency="USD", amount=Decimal("1.00"))
    finally:
        wf.bank.reset_faults()


def test_a_garbled_bank_parks_the_credit_within_its_budget_and_retry_settles_it_later(
    wf: Workflow, funded_account: uuid.UUID,
) -> None:
    exchange_id = exchange_in(wf, funded_account, "debited")
    wf.bank.set_faults(garbled=True)
    try:
        assert credit_until_it_stops_deferring(wf, exchange_id) is StepResult.PARKED
        parked = row_of(wf.engine, exchange_id)
        assert parked.state == "needs_attention" and parked.claimed_by is None
        assert parked.attempt == wf.config.credit_max_attempts
        assert "could not ask the bank" in parked.last_error and "body we cannot read" in parked.last_error
        retrying = [e for e in events(wf.engine, exchange_id) if e.step == "credit" and e.outcome == "retrying"]
        assert len(retrying) == wf.config.credit_max_attempts - 1
        assert all("body we cannot read" in e.error for e in retrying)
        # While the bank still makes no sense, the operator is told so: a refusal, not a 500.
        with pytest.raises(ActionRefused, match="cannot confirm"):
            force_compensation(wf.engine, wf.bank, exchange_id, "alice", queue="exchanges")
    finally:
        wf.bank.reset_faults()

    assert retry_step(wf.engine, exchange_id, "alice", queue="exchanges") == f"{machine.RESOLVE.actor} sent again"
    assert run_step(wf, machine.RESOLVE.actor, exchange_id) is StepResult.ADVANCED
    assert drive(wf, exchange_id) == "completed"
    # In-process: nothing relays the outbox here, so only the money is judged.
    report = invariants.check(wf.engine, bank=wf.bank, settled=False)
    assert report.ok, report


def test_a_bank_record_that_disagrees_leaves_the_exchange_parked_with_the_reason_and_its_claim_free(
    wf: Workflow, funded_account: uuid.UUID,
) -> None:
    exchange_id = exchange_in(wf, funded_account, "needs_attention")
    held = row_of(wf.engine, exchange_id)
    # The bank applied the credit's key, for an amount that is not ours.
    wf.bank.transfer(key=credit_key(exchange_id), reference=str(exchange_id), account=str(held.account_id),
                     currency="USD", amount=held.to_amount + Decimal("1.00"))
    for _ in range(2):  # the reconciler re-asks; each time it stays parked, never stuck on a held claim
        assert run_step(wf, machine.RESOLVE.actor, exchange_id) is StepResult.PARKED
        row = row_of(wf.engine, exchange_id)
        assert (row.state, row.claimed_by, row.claimed_until) == ("needs_attention", None, None)
        assert "does not match the exchange" in row.last_error
        last = events(wf.engine, exchange_id)[-1]
        assert (last.step, last.outcome) == ("resolve", "parked") and "does not match" in last.error
    with pytest.raises(ActionRefused, match="has paid"):
        force_compensation(wf.engine, wf.bank, exchange_id, "alice", queue="exchanges")
    assert state_of(wf.engine, exchange_id) == "needs_attention"
