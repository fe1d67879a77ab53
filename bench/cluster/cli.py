"""Cluster run: every role on a host of its own (network namespaces), faults between the hosts, money checked.

    sudo .venv/bin/python -m bench.cluster [--faults worker-postgres,broker-leader,...] [--json report.json]

It builds the hosts (harness.netns: namespaces, veth, one bridge; nothing on the machine's own
network), re-executes itself on the `ctl` host, starts PostgreSQL, PgBouncer, a 3-node RabbitMQ
cluster and every role, then applies each fault under load, heals it, and waits until every
exchange is terminal. It prints the money invariants and removes every namespace at the end,
also after a failure. The exit status is non-zero if an invariant fails, or an exchange was
not terminal within 60 s of a heal; 2 if this machine cannot build the hosts (it says why).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from harness.cluster import HOSTS
from harness.cluster_servers import postgres_bindir
from harness.netns import Network, missing_tools
from harness.pgbouncer import pgbouncer_binary
from harness.rabbit_cluster import SERVER

NETWORK_VARIABLE = "FX_CLUSTER_NETWORK"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from bench.cluster.faults import FAULTS

    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated, in order (default: all of {', '.join(FAULTS)})")
    p.add_argument("--rate", type=float, default=None, help="exchanges per second during every fault")
    p.add_argument("--warmup", type=int, default=20, help="exchanges before the first fault")
    p.add_argument("--accounts", type=int, default=8)
    p.add_argument("--threads", type=int, default=8, help="load generator threads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for quiescence after a heal")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown:
        p.error(f"--faults: unknown {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    return args


def cannot_run() -> list[str]:
    """What this machine lacks for a cluster run (empty: nothing)."""
    missing = missing_tools()
    if not Path(SERVER).exists():
        missing.append("rabbitmq-server")
    if pgbouncer_binary() is None:
        missing.append("pgbouncer")
    if postgres_bindir() is None:
        missing.append("PostgreSQL server binaries")
    if shutil.which("setpriv") is None:
        missing.append("setpriv")
    return missing


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`: the namespaces are removed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if NETWORK_VARIABLE in os.environ:
        return inside(args, Network.from_json(os.environ[NETWORK_VARIABLE]))
    missing = cannot_run()
    if missing:
        print(f"bench.cluster cannot run here: it needs {', '.join(missing)} (run as root after make test)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_signal)
    network = Network.of(HOSTS)
    try:
        network.create()
        command = (*network.exec_prefix("ctl"), sys.executable, "-m", "bench.cluster", *(argv or sys.argv[1:]))
        env = {**os.environ, NETWORK_VARIABLE: network.to_json()}
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        network.remove()


def inside(args: argparse.Namespace, network: Network) -> int:
    from bench.cluster.report import print_report, write_json
    from bench.cluster.run import run_inside

    signal.signal(signal.SIGTERM, _stop_on_signal)
    result = run_inside(args, network)
    print_report(result)
    if args.json is not None:
        write_json(result, args.json)
    return 0 if result.ok else 1
