"""Chaos run: the real topology under kill -9, bank faults, a Redis restart and dropped connections.

`python -m bench.chaos` (see bench/chaos/cli.py for the options). The parts: `faults` (the
plan and the injector), `outcome` (quiescence and what was measured), `run` (one design),
`report` (the table).
"""

from bench.chaos.cli import main, parse_args, plan_from
from bench.chaos.faults import FaultInjector, FaultPlan
from bench.chaos.outcome import Outcome
from bench.chaos.report import print_report
from bench.chaos.run import run_design

__all__ = ["FaultInjector", "FaultPlan", "Outcome", "main", "parse_args", "plan_from", "print_report", "run_design"]
