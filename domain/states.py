"""The exchange's state machine, in one place: plain data, no I/O.

- the states, and every allowed move between them (`TRANSITIONS`);
- the steps: which state each runs in, the actor that runs it, and what happens when its
  claim expires without a result (its rescue policy);
- the operator's actions: from which states each is allowed, and where it moves to.

The workflow, the operations actions, the reconciler, the pages and the tests all read
these tables; every state write goes through `check_transition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from errors import DomainError


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


S = ExchangeState

TERMINAL_STATES = frozenset({S.COMPLETED, S.FAILED, S.REFUNDED})
#: The states of an exchange that goes well, in order (what the customer's page shows).
HAPPY_PATH = (S.PENDING, S.QUOTED, S.DEBITED, S.CREDITED, S.COMPLETED)

#: Every allowed arrow. `failed` means nothing moved; `refunded` means the debit was reversed.
TRANSITIONS: dict[ExchangeState, frozenset[ExchangeState]] = {
    S.PENDING: frozenset({S.QUOTED, S.FAILED}),
    S.QUOTED: frozenset({S.DEBITED, S.FAILED}),
    S.DEBITED: frozenset({S.CREDITED, S.COMPENSATING, S.NEEDS_ATTENTION}),
    S.CREDITED: frozenset({S.COMPLETED}),
    S.COMPENSATING: frozenset({S.REFUNDED}),
    S.NEEDS_ATTENTION: frozenset({S.CREDITED, S.COMPENSATING, S.DEBITED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.REFUNDED: frozenset(),
}


class RescuePolicy(StrEnum):
    """What to do when a step's claim expires without a result (its worker died or froze)."""

    #: Run the step again: safe when its external call is idempotent, or it has none.
    RETRY = "retry"
    #: The outcome is unknown and only a person should decide: wait in needs_attention.
    PARK = "park"
    #: Give up; compensate where money moved.
    FAIL = "fail"


@dataclass(frozen=True)
class Step:
    """One arrow's worker: the step's name on the timeline and the actor its message names."""

    name: str
    actor: str
    #: The state the step claims the exchange in; None for the receipt (any terminal state).
    runs_in: ExchangeState | None
    #: Only a step with an external call between its claim and its commit can be cut off
    #: mid-way (a local step's claim commits with its result); the credit's is RETRY because
    #: the bank applies each idempotency key once and replays its answer.
    rescue: RescuePolicy = RescuePolicy.RETRY


QUOTE = Step("quote", "quote_exchange", S.PENDING)
DEBIT = Step("debit", "debit_exchange", S.QUOTED)
CREDIT = Step("credit", "credit_exchange", S.DEBITED)
COMPLETE = Step("complete", "complete_exchange", S.CREDITED)
COMPENSATE = Step("compensate", "compensate_exchange", S.COMPENSATING)
#: Settles a parked credit from the bank's record of its key.
RESOLVE = Step("resolve", "resolve_exchange", S.NEEDS_ATTENTION)
RECEIPT = Step("receipt", "send_receipt", None)

STEPS: tuple[Step, ...] = (QUOTE, DEBIT, CREDIT, COMPLETE, COMPENSATE, RESOLVE, RECEIPT)
STEP_BY_ACTOR: dict[str, Step] = {step.actor: step for step in STEPS}
STEP_BY_NAME: dict[str, Step] = {step.name: step for step in STEPS}
#: The step that moves an exchange on from each state that is not final.
STEP_FOR_STATE: dict[ExchangeState, Step] = {step.runs_in: step for step in STEPS if step.runs_in is not None}
#: States with a step still to run (parked included: it waits for `resolve`).
OPEN_STATES: tuple[ExchangeState, ...] = tuple(STEP_FOR_STATE)
#: Open states a worker moves on by itself; a parked exchange waits for the bank or a person.
MOVING_STATES: tuple[ExchangeState, ...] = tuple(s for s in OPEN_STATES if s is not S.NEEDS_ATTENTION)


@dataclass(frozen=True)
class OperatorAction:
    name: str
    #: The states it may be taken from; None: any state with a step to run (no state change).
    allowed_from: frozenset[ExchangeState] | None
    #: Where it moves the exchange; None: it only sends the current step's message again.
    target: ExchangeState | None


RETRY_ACTION = OperatorAction("retry", None, None)
#: Before the debit: release the hold, end failed.
CANCEL_ACTION = OperatorAction("cancel", frozenset({S.PENDING, S.QUOTED}), S.FAILED)
#: After the debit, once the bank has voided the credit's key: refund.
COMPENSATE_ACTION = OperatorAction("compensate", frozenset({S.DEBITED, S.NEEDS_ATTENTION}), S.COMPENSATING)
OPERATOR_ACTIONS: dict[str, OperatorAction] = {a.name: a for a in (RETRY_ACTION, CANCEL_ACTION, COMPENSATE_ACTION)}


def step_payload(exchange_id: object, epoch: int = 0) -> dict[str, object]:
    """A step message's arguments. `epoch` is the exchange's step epoch when the message was written:
    an operator's Retry raises it, so older deliveries of the step (a pending broker retry) are
    acknowledged without effect and the retry's fresh attempt budget is its own."""
    payload: dict[str, object] = {"exchange_id": str(exchange_id)}
    if epoch:
        payload["epoch"] = epoch
    return payload


def actions_allowed(state: ExchangeState) -> tuple[str, ...]:
    """The operator actions an exchange in `state` accepts."""
    return tuple(name for name, action in OPERATOR_ACTIONS.items()
                 if (state in STEP_FOR_STATE if action.allowed_from is None else state in action.allowed_from))


class InvalidTransition(DomainError):
    def __init__(self, current: ExchangeState, target: ExchangeState) -> None:
        super().__init__(f"an exchange cannot go from {current} to {target}")
        self.current = current
        self.target = target


def check_transition(current: ExchangeState, target: ExchangeState) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES
