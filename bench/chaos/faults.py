"""The faults of a chaos run: kill -9 and restart of relays and workers, a Redis restart, dropped connections."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.processes import Process
from harness.provision import Provisioned
from harness.topology import HARNESS_APPLICATION_NAME


@dataclass(frozen=True)
class FaultPlan:
    kill_every_seconds: float = 3.0
    restart_delay_seconds: float = 0.5
    #: Faults last this long at least, and for as long as the load runs.
    min_fault_seconds: float = 30.0
    redis_restart_at_seconds: float | None = 7.0
    redis_down_seconds: float = 1.0
    pg_terminations: int = 3
    pg_first_at_seconds: float = 4.0
    pg_every_seconds: float = 5.0
    timeout_after_apply_rate: float = 0.2
    error_rate: float = 0.05
    stall_ms: int = 1_500

    def bank_faults(self) -> dict[str, Any]:
        return {"timeout_after_apply_rate": self.timeout_after_apply_rate, "error_rate": self.error_rate,
                "stall_ms": self.stall_ms}


class FaultInjector(threading.Thread):
    """Runs the plan until `stop()`: kills and restarts, the Redis restart, the dropped connections."""

    def __init__(self, topology: Provisioned, plan: FaultPlan, seed: int) -> None:
        super().__init__(name="faults", daemon=True)
        self.topology = topology
        self.plan = plan
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._pending: list[tuple[float, Process]] = []

    def stop(self) -> None:
        self._stopping.set()
        self.join()
        for _, process in self._pending:
            process.start()
        self._pending.clear()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # surfaced in the report
            self.error = error

    def _run(self) -> None:
        plan, began = self.plan, time.monotonic()
        self._next_kill = plan.kill_every_seconds
        self._pg_times = [plan.pg_first_at_seconds + k * plan.pg_every_seconds for k in range(plan.pg_terminations)]
        self._redis_at = plan.redis_restart_at_seconds
        while not self._stopping.wait(0.05):
            now = time.monotonic() - began
            for due, process in [p for p in self._pending if p[0] <= now]:
                self._pending.remove((due, process))
                process.start()
            self.notes += self.topology.supervise()
            self._kill_one(now)
            self._drop_connections(now)
            self._restart_redis(now)

    def _kill_one(self, now: float) -> None:
        victims = self.topology.by_role("relay", "worker")
        if not victims or now < self._next_kill:
            return
        self._next_kill += self.plan.kill_every_seconds
        victim = self.rng.choice([v for v in victims if v.is_running()] or victims)
        if victim.is_running():
            victim.kill()
            self.counts[f"kill -9 {victim.role}"] += 1
            self._pending.append((now + self.plan.restart_delay_seconds, victim))

    def _drop_connections(self, now: float) -> None:
        if self._pg_times and now >= self._pg_times[0]:
            self._pg_times.pop(0)
            self.counts["pg_terminate_backend rounds"] += 1
            self.counts["PostgreSQL backends terminated"] += self.topology.database.terminate_backends(
                HARNESS_APPLICATION_NAME)

    def _restart_redis(self, now: float) -> None:
        if self._redis_at is not None and now >= self._redis_at:
            self._redis_at = None
            self.topology.redis_server.kill()
            time.sleep(self.plan.redis_down_seconds)
            self.topology.redis_server.start()
            self.counts["kill -9 redis-server, restart"] += 1
