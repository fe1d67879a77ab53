"""The faults between hosts, each one applied under load and then healed.

A `Fault` has `apply(topo)` and `heal(topo)` and says what it did in `notes`. Which moment a
fault catches is arranged, not hoped for: worker1 pauses half a second between the bank's
answer and the credit's commit (failpoint `step.credit.after_bank=sleep:0.5`), relay1 between
its publish and its mark (`relay.after_publish=sleep:0.5`), so a cut at any moment of load
finds credits and batches inside that window.
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

import requests
from sqlalchemy import select

from bench.load import Submission
from harness.cluster import BROKERS, QUEUE, ClusterTopology
from harness.processes import Process
from models import relay_leases

#: What worker1 and relay1 run with (see the module's docstring).
FAILPOINTS = {"worker1": "step.credit.after_bank=sleep:0.5", "relay1": "relay.after_publish=sleep:0.5"}
DATABASE_HOSTS = ("postgres", "pgbouncer")


@dataclass
class Fault:
    name: ClassVar[str]
    title: ClassVar[str]
    #: Seconds the fault lasts before it is healed.
    hold_seconds: float = 8.0
    #: Exchanges POSTed per second while it lasts.
    rate: float = 8.0
    notes: list[str] = field(default_factory=list)

    def apply(self, topo: ClusterTopology) -> None:
        raise NotImplementedError

    def heal(self, topo: ClusterTopology) -> None:
        topo.network.heal()

    def settled(self, topo: ClusterTopology) -> None:
        """Once every exchange is terminal again: what the fault left to note."""


class WorkerFromDatabase(Fault):
    name, title = "worker-postgres", "worker1 partitioned from PostgreSQL and PgBouncer mid-credit"

    def apply(self, topo: ClusterTopology) -> None:
        topo.network.partition(["worker1"], DATABASE_HOSTS)


class WorkerFromBroker(Fault):
    name, title = "worker-broker", "worker1 partitioned from every broker node, holding prefetched messages"
    hold_seconds = 14.0  # past the 5 s heartbeat's two beats: the nodes requeue what worker1 held

    def apply(self, topo: ClusterTopology) -> None:
        topo.network.partition(["worker1"], BROKERS)


class RelayAfterPublish(Fault):
    name, title = "relay-postgres", "the active relay partitioned from PostgreSQL after publishing, before marking"

    def apply(self, topo: ClusterTopology) -> None:
        active = active_relay(topo)
        self.notes.append(f"active relay at the cut: {active or 'unknown'}")
        topo.network.partition([active or "relay1"], DATABASE_HOSTS)


class BrokerLeaderKilled(Fault):
    name, title = "broker-leader", "kill -9 of the broker node leading the queue; restarted at the heal"

    def apply(self, topo: ClusterTopology) -> None:
        self.victim = topo.brokers.leader_of(QUEUE)
        topo.brokers.kill(self.victim)
        self.notes.append(f"killed {self.victim} (leader of {QUEUE})")

    def heal(self, topo: ClusterTopology) -> None:
        topo.brokers.start(self.victim)
        try:
            self.notes.append(f"new leader: {topo.brokers.leader_of(QUEUE)}")
        except Exception as error:  # a note, not a verdict
            self.notes.append(f"leader unknown after the restart: {error}")


class PgBouncerRestart(Fault):
    name, title = "pgbouncer-restart", "kill -9 of PgBouncer, started again at once"
    hold_seconds = 2.0

    def apply(self, topo: ClusterTopology) -> None:
        topo.pgbouncer.restart()

    def heal(self, topo: ClusterTopology) -> None:
        pass


class SlowLossyLinks(Fault):
    name, title = "slow-lossy", "200 ms added to every packet each host sends, and 5 % of them dropped"
    hold_seconds, rate = 15.0, 3.0
    delay_ms, loss = 200, 0.05

    def apply(self, topo: ClusterTopology) -> None:
        self.readers: list[Process] = []
        self.healthy_ms = connect_ms(topo, "postgres")
        for host in topo.network.hosts:
            reader = topo.processes.start(f"netem-{host}", topo.network.netem_command(host, self.delay_ms),
                                          {"PYTHONUNBUFFERED": "1"}, role="netem",
                                          ready_marker="netem: delaying")
            self.readers.append(reader)
        for reader in self.readers:
            reader.wait_ready()
        topo.network.degrade(self.delay_ms, self.loss)
        self.notes.append(f"TCP connect ctl -> postgres while degraded: {connect_ms(topo, 'postgres'):.0f} ms "
                          f"(healthy: {self.healthy_ms:.1f} ms)")

    def heal(self, topo: ClusterTopology) -> None:
        topo.network.restore()
        for reader in self.readers:
            reader.stop()


class WebFromDatabase(Fault):
    name, title = "web-postgres", "web1 partitioned from PostgreSQL and PgBouncer mid-request"
    probes = 4

    def apply(self, topo: ClusterTopology) -> None:
        topo.network.partition(["web1"], DATABASE_HOSTS)
        self.answers = [probe(topo, topo.web_urls[0], f"probe-{uuid.uuid4().hex[:8]}") for _ in range(self.probes)]
        for status, retry_after, _key, _ in self.answers:
            self.notes.append(f"POST to web1 while cut: {status} Retry-After={retry_after}")

    def heal(self, topo: ClusterTopology) -> None:
        topo.network.heal()
        self.replays = [probe(topo, topo.web_urls[1], key) for _, _, key, _ in self.answers]
        for status, _, key, exchange_id in self.replays:
            self.notes.append(f"the same key again, after the heal: {status} -> {exchange_id} ({key})")

    def submissions(self) -> list[Submission]:
        """The probes, as the load's submissions: their exchanges are measured with the rest."""
        return [Submission(-1, key, {}, exchange_id=exchange_id, status=status, attempts=2)
                for status, _, key, exchange_id in self.replays]

    def violations(self) -> list[str]:
        bad = [f"web1 answered {s} (Retry-After {r}) while cut off" for s, r, _, _ in self.answers
               if not (s is not None and 500 <= s < 600 and (s != 503 or r))]
        bad += [f"the retry of {k} answered {s}" for s, _, k, _ in self.replays if s not in (200, 201, 202)]
        return bad


#: The probe's account and API key, set by the run.
PROBE_ACCOUNT: dict[str, str] = {}


def probe(topo: ClusterTopology, base_url: str, key: str) -> tuple[int | None, str | None, str, str | None]:
    """One POST with `key`: (status, Retry-After, key, exchange id)."""
    body = {"account": PROBE_ACCOUNT["account"], "from_currency": "CAD", "to_currency": "USD", "amount": "10.00"}
    headers = {"Idempotency-Key": key, "Authorization": f"Bearer {PROBE_ACCOUNT['key']}"}
    try:
        response = requests.post(f"{base_url}/api/exchanges", json=body, headers=headers, timeout=(3, 30))
    except requests.RequestException:
        return None, None, key, None
    exchange_id = response.json().get("id") if response.status_code < 300 else None
    return response.status_code, response.headers.get("Retry-After"), key, exchange_id


def connect_ms(topo: ClusterTopology, host: str, port: int = 5432) -> float:
    """Milliseconds a TCP connection from here (ctl) to `host` takes to open: a round trip."""
    began = time.monotonic()
    try:
        socket.create_connection((topo.network.ip(host), port), timeout=10).close()
    except OSError:
        return float("nan")
    return (time.monotonic() - began) * 1000


def active_relay(topo: ClusterTopology) -> str | None:
    with topo.engine.connect() as conn:
        holders = [h for (h,) in conn.execute(select(relay_leases.c.holder)) if h]
    for relay in topo.by_role("relay"):
        if relay.is_running() and any(f":{relay.pid}:" in h for h in holders):
            return relay.name
    return None


FAULTS: dict[str, type[Fault]] = {f.name: f for f in (WorkerFromDatabase, WorkerFromBroker, RelayAfterPublish,
                                                      BrokerLeaderKilled, PgBouncerRestart, SlowLossyLinks,
                                                      WebFromDatabase)}
