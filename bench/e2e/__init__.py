"""End-to-end benchmark: exchanges through the full topology, as separate processes, with a fault-free bank.

`python -m bench.e2e` (see bench/e2e/cli.py for the phases and options). The parts: `phases`
(measurement windows), `run` (the four phases), `profile` (py-spy), `report`.
"""

from bench.e2e.cli import main, parse_args

__all__ = ["main", "parse_args"]
