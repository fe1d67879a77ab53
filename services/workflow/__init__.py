"""The exchange's steps, each safe under duplicate delivery.

- `context`: the workflow's dependencies, the delivery, a step's decision (Transition);
- `runner`: the claim / decide / fenced-commit pattern, written once;
- `local_steps`: quote, debit, complete, compensate, receipt (one transaction each);
- `credit`: the bank call and the parked credit's resolution;
- `registry`: actor name -> step function, from the state machine's step table.
"""

from services.workflow.context import Delivery, StepDeferred, StepResult, Transition, Workflow, WorkflowConfig
from services.workflow.credit import credit_key
from services.workflow.registry import STEPS

__all__ = ["STEPS", "Delivery", "StepDeferred", "StepResult", "Transition", "Workflow", "WorkflowConfig",
           "credit_key"]
