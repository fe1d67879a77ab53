"""Relay benchmark: throughput against a plain `actor.send` loop, and commit-to-consumer latency.

`python -m bench.relay` (see bench/relay/cli.py and bench/README.md). The parts:
`environment` (database, Redis, counters), `meter` (CPU), `throughput`, `latency`, `report`.
"""

from bench.relay.cli import main, parse_args

__all__ = ["main", "parse_args"]
