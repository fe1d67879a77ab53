"""What the steps share: their dependencies, who delivers them, and what they decide."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine

from bank.client import BankClient
from domain.fx import RateProvider
from domain.states import ExchangeState, RescuePolicy, Step
from errors import WorkflowError
from services.claims import Claim
from settings import Settings


@dataclass(frozen=True)
class WorkflowConfig:
    # The defaults are the settings' (settings.py); bootstrap.py maps each process's own.
    queue: str = Settings.queue_name
    #: How long a claim protects a step; longer than the bank's connect + read timeouts.
    lease: timedelta = timedelta(seconds=Settings.step_lease_seconds)
    quote_ttl: timedelta = timedelta(seconds=Settings.quote_ttl_seconds)
    #: Bank calls of the credit step before its final-failure path runs.
    credit_max_attempts: int = Settings.credit_max_attempts
    #: Run a local step in its predecessor's transaction instead of behind a message (fewer hops).
    fuse_local_steps: bool = True
    #: After a local step, run the external step that follows (the credit) at once in the same
    #: worker; its outbox message waits one lease before the relay may send it, in case this
    #: worker dies first.
    continue_inline: bool = True
    #: Per-step (by step name) replacements of the rescue policies in domain/states.py.
    rescue_overrides: dict[str, RescuePolicy] = field(default_factory=dict)

    def rescue_policy(self, step: Step) -> RescuePolicy:
        return self.rescue_overrides.get(step.name, step.rescue)


@dataclass
class Workflow:
    """What the steps need, passed in at the composition root (bootstrap.py)."""

    engine: Engine
    bank: BankClient
    rates: RateProvider
    config: WorkflowConfig = field(default_factory=WorkflowConfig)


@dataclass(frozen=True)
class Delivery:
    """Who runs the step: the exchange, the broker message and the worker."""

    exchange_id: uuid.UUID
    worker: str
    message_id: uuid.UUID | None = None
    #: The step epoch the message was written in (domain.states.step_payload).
    epoch: int = 0
    #: Run by the worker that wrote the message, at once: the step marks its outbox row
    #: published with its result, so the relay does not send it too.
    inline: bool = False
    #: The step's claim, taken in its predecessor's transaction (a hand-off): no claim of its own.
    claimed: Claim | None = None


@dataclass(frozen=True)
class Handoff:
    """The external step a local step's transaction led to, for its worker to run at once."""

    step: Step
    delivery: Delivery


class StepResult(StrEnum):
    ADVANCED = "advanced"
    #: Already past this step (a duplicate delivery): acknowledged with no effect.
    SKIPPED = "skipped"
    #: The claim was taken over while the step ran; its writes were rolled back.
    LOST_CLAIM = "lost_claim"
    #: The step cannot decide alone; the exchange waits for a person.
    PARKED = "parked"


class StepDeferred(WorkflowError):
    """Try this step again later (the broker's retry, after `delay_ms`)."""

    def __init__(self, reason: str, delay_ms: int | None = None) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


@dataclass(frozen=True)
class Transition:
    """What a step decided: the next state, the columns it sets and which step comes next."""

    target: ExchangeState
    outcome: str = "succeeded"
    next_step: Step | None = None
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    detail: dict[str, Any] | None = None
    #: A step that succeeds clears the exchange's last error; a refund keeps the one that caused it.
    keeps_last_error: bool = False


StepBody = Callable[[Connection, Claim, datetime], Transition]
StepFunction = Callable[[Workflow, Delivery], StepResult]
