"""One cluster run, on the `ctl` host: the cluster up, each fault under load, healed, waited out; then the money."""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from bench.chaos.outcome import Outcome, measure, recoveries, wait_quiescent
from bench.cluster.faults import FAILPOINTS, FAULTS, PROBE_ACCOUNT, Fault, WebFromDatabase
from bench.load import FUNDING, LoadGenerator, Submission
from harness.cluster import ClusterTopology, cluster
from harness.designs import BENCH_ENV, Layout
from harness.netns import Network
from harness.provision import api_keys, open_accounts
from jobs.actors import DUPLICATE_LOG

#: One gunicorn worker per web host: ten namespaces' processes share two cores.
LAYOUT = Layout(relays=2, workers=2, worker_threads=4, web_workers=1, web_threads=8)
#: Seconds of load before each fault is applied.
LEAD_SECONDS = 3.0
#: Every exchange must be terminal this soon after each heal.
QUIESCENCE_LIMIT_SECONDS = 60.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Phase:
    name: str
    title: str
    posted: int = 0
    accepted: int = 0
    quiesced: bool = False
    seconds_to_quiescence: float = 0.0
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.quiesced and self.seconds_to_quiescence <= QUIESCENCE_LIMIT_SECONDS and not self.violations


@dataclass
class ClusterOutcome:
    phases: list[Phase] = field(default_factory=list)
    money: Outcome = field(default_factory=lambda: Outcome("outbox"))
    commands: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.money.ok and all(p.ok for p in self.phases)


def duplicate_deliveries(topo: ClusterTopology) -> int:
    """Deliveries of a step already past, as the workers logged them (at-least-once delivery at work)."""
    return sum(p.output().count(DUPLICATE_LOG) for p in topo.by_role("worker"))


def run_fault(topo: ClusterTopology, fault: Fault, load: LoadGenerator, start: int,
              subs: list[Submission], deadline: float) -> Phase:
    phase = Phase(fault.name, fault.title)
    count = max(1, int(fault.rate * (LEAD_SECONDS + fault.hold_seconds)))
    batch: list[Submission] = []
    before, duplicates = recoveries(topo), duplicate_deliveries(topo)
    loader = threading.Thread(target=lambda: batch.extend(load.run(count, rate=fault.rate, start=start)),
                              name=f"load-{fault.name}", daemon=True)
    log(f"[{fault.name}] {fault.title}: {count} exchanges at {fault.rate}/s")
    loader.start()
    time.sleep(LEAD_SECONDS)
    applied = time.monotonic()
    fault.apply(topo)
    time.sleep(max(0.0, fault.hold_seconds - (time.monotonic() - applied)))
    fault.heal(topo)
    healed = time.monotonic()
    loader.join()
    subs.extend(batch)
    phase.posted, phase.accepted = len(batch), sum(1 for s in batch if s.accepted)
    expected = len({s.exchange_id for s in subs if s.accepted})
    phase.quiesced, _, _ = wait_quiescent(topo, expected=expected, deadline_seconds=deadline, stall_seconds=deadline,
                                          notes=phase.notes)
    phase.seconds_to_quiescence = time.monotonic() - healed
    fault.settled(topo)
    phase.notes += fault.notes
    if isinstance(fault, WebFromDatabase):
        phase.violations += fault.violations()
        subs.extend(fault.submissions())
    after = recoveries(topo)
    phase.notes += [f"{label}: {n - before[label]}" for label, n in after.items() if n > before[label]]
    if (more := duplicate_deliveries(topo) - duplicates) > 0:
        phase.notes.append(f"duplicate deliveries, acknowledged with no effect: {more}")
    log(f"[{fault.name}] healed; every exchange terminal {phase.seconds_to_quiescence:.1f}s after the heal"
        if phase.quiesced else f"[{fault.name}] NOT quiescent {phase.seconds_to_quiescence:.0f}s after the heal")
    return phase


def run_inside(args: argparse.Namespace, network: Network) -> ClusterOutcome:
    result = ClusterOutcome()
    with cluster(network, env=BENCH_ENV, layout=LAYOUT, bank_seed=args.seed, failpoints=FAILPOINTS,
                 keep_logs=args.keep_logs) as topo:
        log("cluster up: PostgreSQL, PgBouncer, 3 RabbitMQ nodes; starting web, relays, workers, reconciler, bank")
        accounts = open_accounts(topo, args.accounts, FUNDING)
        keys = api_keys(topo, accounts)
        PROBE_ACCOUNT.update(account=accounts[0], key=keys[accounts[0]])
        topo.start_cluster_roles()
        load = LoadGenerator(topo.web_urls, accounts, seed=args.seed, threads=args.threads,
                             run_id=f"cluster-{uuid.uuid4().hex[:8]}", api_keys=keys)
        subs = load.run(args.warmup, rate=10)  # the queues are declared, every role has worked once
        wait_quiescent(topo, expected=sum(s.accepted for s in subs), deadline_seconds=args.deadline,
                       stall_seconds=args.deadline, notes=result.money.notes)
        index = args.warmup
        for name in args.faults:
            fault = FAULTS[name]()
            if args.rate:
                fault.rate = args.rate
            result.phases.append(run_fault(topo, fault, load, index, subs, args.deadline))
            index += result.phases[-1].posted
        measure(topo, subs, result.money)
        result.money.recoveries = recoveries(topo)
        result.money.retried_posts = load.retried_posts
        result.money.quiesced = all(p.quiesced for p in result.phases)
        result.commands = list(topo.commands)
    return result
