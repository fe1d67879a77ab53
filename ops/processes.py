"""Live processes: every worker, relay and reconciler writes a heartbeat while it runs.

A process is alive while its last beat is younger than PROCESS_DEAD_AFTER_SECONDS and it
has not said it stopped; a role with no live process is an alarm on the dashboard and
`fx_processes_alive{role}` says 0. Beats are one small upsert each, off the hot path.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import metadata
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from infra.database import insert_on_conflict
from models import process_heartbeats as hb
from models.base import utcnow

log = logging.getLogger("ops.processes")


class ProcessRole(StrEnum):
    WORKER = "worker"
    RELAY = "relay"
    RECONCILER = "reconciler"


def version() -> str:
    try:
        return metadata.version("fx-outbox")
    except metadata.PackageNotFoundError:
        return "dev"


def process_id(role: ProcessRole, host: str | None = None, pid: int | None = None) -> str:
    return f"{role}:{host or socket.gethostname()}:{pid or os.getpid()}"


class Heartbeat:
    """This process's heartbeat row: `beat()` once, or `start()` a thread that beats every interval."""

    def __init__(self, engine: Engine, role: ProcessRole, *, interval_seconds: float,
                 holding: Callable[[], dict[str, Any]] | None = None) -> None:
        self.engine = engine
        self.role = role
        self.interval_seconds = interval_seconds
        self.holding = holding
        self.id = process_id(role)
        self.started_at = utcnow()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        row = {"id": self.id, "role": self.role.value, "host": socket.gethostname(), "pid": os.getpid(),
               "version": version(), "started_at": self.started_at, "beat_at": now, "stopped_at": None,
               "holding": self.holding() if self.holding else None}
        with self.engine.begin() as conn:
            statement = insert_on_conflict(conn, hb).values(**row)
            conn.execute(statement.on_conflict_do_update(
                index_elements=[hb.c.id],
                set_={k: statement.excluded[k] for k in ("version", "started_at", "beat_at", "stopped_at", "holding")}))

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.role}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_seconds):
            try:
                self.beat()
            except Exception:  # the next beat tries again; a process that cannot beat shows as dead
                log.warning("heartbeat of %s failed", self.id, exc_info=True)

    def stop(self) -> None:
        """A clean shutdown: say so, so the dashboard shows `stopped`, not `dead`."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.engine.begin() as conn:
                conn.execute(update(hb).where(hb.c.id == self.id).values(stopped_at=utcnow()))
        except Exception:
            log.warning("could not record the stop of %s", self.id, exc_info=True)


@dataclass(frozen=True)
class ProcessView:
    id: str
    role: str
    host: str
    pid: int
    version: str
    started_at: datetime
    beat_at: datetime
    stopped_at: datetime | None
    holding: dict[str, Any] | None
    status: str  # alive / dead / stopped


#: Processes whose last beat is older than this are no longer listed.
LISTED_FOR = timedelta(hours=24)


def processes(conn: Connection, *, dead_after: timedelta, now: datetime) -> list[ProcessView]:
    """Every process seen in the last day, the live ones first."""
    rows = conn.execute(select(hb).where(hb.c.beat_at > now - LISTED_FOR).order_by(hb.c.role, hb.c.id)).all()
    views = [ProcessView(r.id, r.role, r.host, r.pid, r.version, r.started_at, r.beat_at, r.stopped_at, r.holding,
                         _status(r.beat_at, r.stopped_at, dead_after, now)) for r in rows]
    return sorted(views, key=lambda v: (v.status != "alive", v.role, v.id))


def _status(beat_at: datetime, stopped_at: datetime | None, dead_after: timedelta, now: datetime) -> str:
    if stopped_at is not None:
        return "stopped"
    return "alive" if beat_at > now - dead_after else "dead"


def alive_by_role(views: list[ProcessView]) -> dict[str, int]:
    counts = {role.value: 0 for role in ProcessRole}
    for view in views:
        if view.status == "alive":
            counts[view.role] = counts.get(view.role, 0) + 1
    return counts


def holder_alive(claimed_by: str | None, views: list[ProcessView]) -> bool | None:
    """Whether the worker named in a claim (`host:pid:thread`) is alive; None when nobody holds it."""
    if not claimed_by:
        return None
    host, _, rest = claimed_by.partition(":")
    pid = rest.partition(":")[0]
    return any(v.status == "alive" and v.host == host and str(v.pid) == pid for v in views
               if v.role == ProcessRole.WORKER)
