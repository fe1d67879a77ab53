"""Which function runs each step of domain/states.py: the actors look their step up here."""

from __future__ import annotations

from domain import states as machine
from services.workflow.context import StepFunction
from services.workflow.credit import credit, resolve_with_bank
from services.workflow.local_steps import CONTINUATIONS, compensate, complete, debit, quote, send_receipt

_BY_STEP: dict[machine.Step, StepFunction] = {
    machine.QUOTE: quote,
    machine.DEBIT: debit,
    machine.CREDIT: credit,
    machine.COMPLETE: complete,
    machine.COMPENSATE: compensate,
    machine.RESOLVE: resolve_with_bank,
    machine.RECEIPT: send_receipt,
}
assert set(_BY_STEP) == set(machine.STEPS), "every step of the state machine has a function"

#: Actor name -> step function. The actors are thin wrappers over these.
STEPS: dict[str, StepFunction] = {step.actor: fn for step, fn in _BY_STEP.items()}

# The external steps a worker may run at once after a local step (its message then waits a lease).
CONTINUATIONS.update({machine.CREDIT: credit})
