"""The outcome of each periodic check, so a check that could not run reads "unknown", never "all clear"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from infra.database import insert_on_conflict
from models import ops_checks

#: The reconciler's comparison of our ledger with the bank's record.
BANK_COMPARE = "bank_compare"


@dataclass(frozen=True)
class CheckState:
    name: str
    last_attempt_at: datetime
    last_success_at: datetime | None
    last_error: str | None

    @property
    def ok(self) -> bool:
        """Whether its last attempt ran to the end."""
        return self.last_error is None


def record(engine: Engine, name: str, *, now: datetime, error: str | None = None,
           covered_through: datetime | None = None) -> None:
    """One attempt of check `name`: it ran to the end (`error` None), or it could not, and why.
    A run to the end may say how far it reached (`covered_through`), for the next run to go on from."""
    values: dict[str, object] = {"name": name, "last_attempt_at": now, "last_error": error[:2000] if error else None}
    if error is None:
        values["last_success_at"] = now
        if covered_through is not None:
            values["covered_through"] = covered_through
    with engine.begin() as conn:
        statement = insert_on_conflict(conn, ops_checks).values(**values)
        conn.execute(statement.on_conflict_do_update(
            index_elements=[ops_checks.c.name],
            set_={k: statement.excluded[k] for k in values if k != "name"}))


def covered_through(conn: Connection, name: str) -> datetime | None:
    """How far the check's runs have reached; None if no run ever said."""
    return conn.execute(select(ops_checks.c.covered_through).where(ops_checks.c.name == name)).scalar()


def state_of(conn: Connection, name: str) -> CheckState | None:
    """The check's last outcome; None if it never ran."""
    row = conn.execute(select(ops_checks).where(ops_checks.c.name == name)).first()
    return None if row is None else CheckState(row.name, row.last_attempt_at, row.last_success_at, row.last_error)
