"""The exchange's state machine: every arrow it allows, and every one it refuses."""

from __future__ import annotations

import itertools

import pytest

from domain.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    ExchangeState,
    InvalidTransition,
    check_transition,
    is_terminal,
)

S = ExchangeState

#: The arrows, written out independently of TRANSITIONS so that a change there must be deliberate.
ALLOWED = {
    (S.PENDING, S.QUOTED),
    (S.PENDING, S.FAILED),
    (S.QUOTED, S.DEBITED),
    (S.QUOTED, S.FAILED),
    (S.DEBITED, S.CREDITED),
    (S.DEBITED, S.COMPENSATING),
    (S.DEBITED, S.NEEDS_ATTENTION),
    (S.CREDITED, S.COMPLETED),
    (S.COMPENSATING, S.REFUNDED),
    (S.NEEDS_ATTENTION, S.CREDITED),
    (S.NEEDS_ATTENTION, S.COMPENSATING),
    (S.NEEDS_ATTENTION, S.DEBITED),
}
ALL_PAIRS = list(itertools.product(ExchangeState, repeat=2))
DISALLOWED = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def pair_id(pair: tuple[ExchangeState, ExchangeState]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_the_transition_table_is_exactly_the_documented_arrows() -> None:
    assert set(TRANSITIONS) == set(ExchangeState)
    assert {(source, target) for source, targets in TRANSITIONS.items() for target in targets} == ALLOWED


@pytest.mark.parametrize("pair", sorted(ALLOWED), ids=pair_id)
def test_allowed_transition_passes(pair: tuple[ExchangeState, ExchangeState]) -> None:
    check_transition(*pair)


@pytest.mark.parametrize("pair", DISALLOWED, ids=pair_id)
def test_disallowed_transition_raises_invalid_transition(pair: tuple[ExchangeState, ExchangeState]) -> None:
    current, target = pair
    with pytest.raises(InvalidTransition) as refused:
        check_transition(current, target)
    assert refused.value.current == current
    assert refused.value.target == target
    assert str(current) in str(refused.value) and str(target) in str(refused.value)


def test_every_pair_of_states_is_either_allowed_or_refused() -> None:
    assert len(ALL_PAIRS) == len(ExchangeState) ** 2 == len(ALLOWED) + len(DISALLOWED)


def test_no_state_may_go_to_itself() -> None:
    assert not any(source == target for source, target in ALLOWED)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES), ids=str)
def test_terminal_state_has_no_exit(state: ExchangeState) -> None:
    assert is_terminal(state)
    assert TRANSITIONS[state] == frozenset()
    for target in ExchangeState:
        with pytest.raises(InvalidTransition):
            check_transition(state, target)


def test_the_terminal_states_are_completed_failed_and_refunded() -> None:
    assert {S.COMPLETED, S.FAILED, S.REFUNDED} == TERMINAL_STATES
    assert [state for state in ExchangeState if is_terminal(state)] == [S.COMPLETED, S.FAILED, S.REFUNDED]


@pytest.mark.parametrize("state", sorted(set(ExchangeState) - TERMINAL_STATES), ids=str)
def test_every_non_terminal_state_can_reach_a_terminal_state(state: ExchangeState) -> None:
    # No exchange can be stuck for good: from any open state some path ends.
    seen, frontier = {state}, [state]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen & TERMINAL_STATES


def test_money_that_moved_can_only_end_completed_or_refunded() -> None:
    # Once debited, `failed` (which means "nothing moved") must be unreachable.
    seen, frontier = {S.DEBITED}, [S.DEBITED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen & TERMINAL_STATES == {S.COMPLETED, S.REFUNDED}


def test_states_are_their_database_strings() -> None:
    assert S.NEEDS_ATTENTION == "needs_attention"
    assert {str(state) for state in ExchangeState} == {state.value for state in ExchangeState}
