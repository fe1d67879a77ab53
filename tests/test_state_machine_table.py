"""The step and operator tables of domain/states.py agree with its arrows, and the workflow runs them all."""

from __future__ import annotations

import pytest

from domain import states as machine
from domain.states import TERMINAL_STATES, TRANSITIONS, ExchangeState, RescuePolicy
from services.workflow import STEPS, WorkflowConfig

S = ExchangeState


def test_every_state_that_is_not_final_has_exactly_one_step_to_move_it_on() -> None:
    assert set(machine.STEP_FOR_STATE) == set(ExchangeState) - TERMINAL_STATES
    assert len({step.runs_in for step in machine.STEPS if step.runs_in is not None}) == len(machine.STEP_FOR_STATE)


def test_every_step_of_the_machine_has_an_actor_and_a_function() -> None:
    assert set(STEPS) == {step.actor for step in machine.STEPS}
    assert len({step.name for step in machine.STEPS}) == len(machine.STEPS)
    assert machine.STEP_BY_ACTOR[machine.CREDIT.actor] is machine.CREDIT


def test_every_state_a_step_claims_has_somewhere_to_go() -> None:
    for state in machine.STEP_FOR_STATE:
        assert TRANSITIONS[state], f"{state} has a step but no arrow out"


@pytest.mark.parametrize("action", list(machine.OPERATOR_ACTIONS.values()), ids=lambda a: a.name)
def test_every_operator_move_is_an_arrow_of_the_machine(action: machine.OperatorAction) -> None:
    if action.target is None:
        assert action.allowed_from is None  # retry re-sends the current step; it moves nothing
        return
    assert action.allowed_from
    for state in action.allowed_from:
        assert action.target in TRANSITIONS[state], f"{action.name}: {state} -> {action.target} is not an arrow"


@pytest.mark.parametrize(("state", "allowed"), [
    (S.PENDING, ("retry", "cancel")),
    (S.QUOTED, ("retry", "cancel")),
    (S.DEBITED, ("retry", "compensate")),
    (S.CREDITED, ("retry",)),
    (S.COMPENSATING, ("retry",)),
    (S.NEEDS_ATTENTION, ("retry", "compensate")),
    (S.COMPLETED, ()),
    (S.FAILED, ()),
    (S.REFUNDED, ()),
])
def test_each_state_offers_only_the_operator_actions_it_allows(state: ExchangeState, allowed: tuple[str, ...]) -> None:
    assert machine.actions_allowed(state) == allowed


def test_a_steps_rescue_policy_is_declared_in_the_table_and_can_be_overridden_per_step() -> None:
    assert machine.CREDIT.rescue is RescuePolicy.RETRY
    assert WorkflowConfig().rescue_policy(machine.CREDIT) is RescuePolicy.RETRY
    config = WorkflowConfig(rescue_overrides={machine.CREDIT.name: RescuePolicy.PARK})
    assert config.rescue_policy(machine.CREDIT) is RescuePolicy.PARK
    assert config.rescue_policy(machine.DEBIT) is RescuePolicy.RETRY
