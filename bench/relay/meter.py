"""The relay benchmark's CPU columns: wall time, this process, PostgreSQL (ours / all), the Redis server."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

import redis

from harness.cpu import CpuMeter, ProcessTable, Sample, postgres_backends

#: Roles of the PostgreSQL processes: our database's backends, and every other one.
OURS, OTHERS = "ours", "others"


@dataclass(frozen=True)
class CpuSample:
    wall: float
    process: float
    redis_server: float
    #: Every local PostgreSQL process, by role (None if PostgreSQL is not local).
    postgres: Sample | None = None


@dataclass(frozen=True)
class CpuSpent:
    wall: float
    process: float
    redis_server: float
    pg_ours: float | None
    pg_server: float | None

    @classmethod
    def between(cls, before: CpuSample, after: CpuSample) -> CpuSpent:
        pg: Counter[str] | None = None
        if before.postgres is not None and after.postgres is not None:
            pg = CpuMeter.spent(before.postgres, after.postgres)
        return cls(
            wall=after.wall - before.wall,
            process=after.process - before.process,
            redis_server=after.redis_server - before.redis_server,
            pg_ours=None if pg is None else pg[OURS],
            pg_server=None if pg is None else pg[OURS] + pg[OTHERS],
        )

    @property
    def total(self) -> float:
        """This process + our PostgreSQL backends + the Redis server."""
        return self.process + (self.pg_ours or 0.0) + self.redis_server


class RelayCpuMeter:
    """Samples wall time, this process's CPU, PostgreSQL's (our backends / whole server) and Redis's.

    PostgreSQL backends show their database in the process title, so ours can be told
    from those of tests running beside the benchmark. Redis reports only its whole server.
    """

    def __init__(self, database: str, client: redis.Redis, postgres_is_local: bool) -> None:
        self.marker = f" {database} "
        self.client = client
        self.postgres = CpuMeter(self._roles) if postgres_is_local and os.path.isdir("/proc") else None

    def _roles(self, table: ProcessTable) -> dict[int, str]:
        return {pid: OURS if self.marker in line else OTHERS for pid, line in postgres_backends(table).items()}

    def sample(self) -> CpuSample:
        info = self.client.info("cpu")
        wall, process = time.perf_counter(), time.process_time()
        redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return CpuSample(wall, process, redis_cpu, self.postgres.sample() if self.postgres else None)
