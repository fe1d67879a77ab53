"""Our copy of the bank's record, kept current from its change feed.

Bank reconciliation works from statements: each pass imports the lines that changed since the
last one (a transfer applied, voided or reversed), so its cost follows what happened, not all
history. The highest change imported is the cursor; a pass that fails midway keeps what it
imported and the next one continues from there.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, select

from bank.client import BankClient, BankRecord
from domain.reconciliation import BankPayment
from infra.database import insert_on_conflict
from models import bank_statement_lines as lines

#: Transfers asked of the bank per page of its change feed.
PAGE = 1000
#: References per IN (...) when reading the lines of many exchanges.
REFERENCES_PER_QUERY = 500

APPLIED = "applied"


@dataclass(frozen=True)
class Imported:
    """What one import brought in: every line that changed (any status)."""

    changed: list[BankRecord]

    @property
    def references(self) -> set[str]:
        return {r.reference for r in self.changed}


def import_changes(engine: Engine, bank: BankClient, *, page: int = PAGE) -> Imported:
    """Every transfer that changed at the bank since the last import, stored here."""
    with engine.connect() as conn:
        cursor = conn.execute(select(func.coalesce(func.max(lines.c.change_seq), 0))).scalar_one()
    changed: list[BankRecord] = []
    while True:
        batch = bank.changes(after=cursor, limit=page)
        if batch.records:
            _store(engine, batch.records)
            changed += batch.records
        if len(batch.records) < page or batch.cursor <= cursor:
            return Imported(changed)
        cursor = batch.cursor


def _store(engine: Engine, records: list[BankRecord]) -> None:
    rows = {r.id: {"transfer_id": r.id, "reference": r.reference[:120], "status": r.status, "amount": r.amount,
                   "currency": r.currency[:3], "change_seq": r.change_seq} for r in records}
    with engine.begin() as conn:
        statement = insert_on_conflict(conn, lines).values(list(rows.values()))
        conn.execute(statement.on_conflict_do_update(
            index_elements=[lines.c.transfer_id],
            set_={k: statement.excluded[k] for k in ("status", "amount", "currency", "change_seq")}))


def applied_for(conn: Connection, references: Collection[str] | None) -> list[BankPayment]:
    """The applied transfers made for `references` (every applied transfer when None)."""
    query = select(lines.c.transfer_id, lines.c.reference, lines.c.amount, lines.c.currency).where(
        lines.c.status == APPLIED)
    if references is None:
        return [BankPayment(*row) for row in conn.execute(query)]
    wanted = sorted(references)
    return [BankPayment(*row) for start in range(0, len(wanted), REFERENCES_PER_QUERY)
            for row in conn.execute(query.where(lines.c.reference.in_(wanted[start:start + REFERENCES_PER_QUERY])))]
