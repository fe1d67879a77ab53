"""The exchange's state machine: plain data, no I/O."""

from __future__ import annotations

from enum import StrEnum


class ExchangeState(StrEnum):
    PENDING = "pending"
    QUOTED = "quoted"
    DEBITED = "debited"
    CREDITED = "credited"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATING = "compensating"
    REFUNDED = "refunded"
    NEEDS_ATTENTION = "needs_attention"


TERMINAL_STATES = frozenset({ExchangeState.COMPLETED, ExchangeState.FAILED, ExchangeState.REFUNDED})

#: Every allowed arrow. `failed` means nothing moved; `refunded` means the debit was reversed.
TRANSITIONS: dict[ExchangeState, frozenset[ExchangeState]] = {
    ExchangeState.PENDING: frozenset({ExchangeState.QUOTED, ExchangeState.FAILED}),
    ExchangeState.QUOTED: frozenset({ExchangeState.DEBITED, ExchangeState.FAILED}),
    ExchangeState.DEBITED: frozenset(
        {ExchangeState.CREDITED, ExchangeState.COMPENSATING, ExchangeState.NEEDS_ATTENTION}
    ),
    ExchangeState.CREDITED: frozenset({ExchangeState.COMPLETED}),
    ExchangeState.COMPENSATING: frozenset({ExchangeState.REFUNDED}),
    ExchangeState.NEEDS_ATTENTION: frozenset(
        {ExchangeState.CREDITED, ExchangeState.COMPENSATING, ExchangeState.DEBITED}
    ),
    ExchangeState.COMPLETED: frozenset(),
    ExchangeState.FAILED: frozenset(),
    ExchangeState.REFUNDED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, current: ExchangeState, target: ExchangeState) -> None:
        super().__init__(f"an exchange cannot go from {current} to {target}")
        self.current = current
        self.target = target


def check_transition(current: ExchangeState, target: ExchangeState) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)


def is_terminal(state: ExchangeState) -> bool:
    return state in TERMINAL_STATES
