"""The bank's own ledger of transfers, keyed by idempotency key (SQLite, one writer)."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from errors import FxError


@dataclass(frozen=True)
class Transfer:
    id: str
    idempotency_key: str
    reference: str
    account: str
    currency: str
    amount: str
    status: str  # applied / voided / reversed
    created_at: str
    request_hash: str
    #: Where this transfer's last change (applied, voided, reversed) sits in the bank's change
    #: feed: a client that has read up to N asks for what changed after N (GET /transfers/changes).
    change_seq: int = 0

    def as_json(self) -> dict[str, str | int]:
        body = asdict(self)
        body.pop("request_hash")
        return body


class KeyReused(FxError):
    """The key was first used with another request."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    reference TEXT NOT NULL,
    account TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    change_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS transfers_reference ON transfers (reference);
"""
#: A bank file from before the change feed: each transfer is given its place in the feed.
_ADD_CHANGE_FEED = """
ALTER TABLE transfers ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
UPDATE transfers SET change_seq = rowid;
"""
_COLUMNS = "id, idempotency_key, reference, account, currency, amount, status, created_at, request_hash, change_seq"


class TransferStore:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        if "change_seq" not in {row[1] for row in self._db.execute("PRAGMA table_info(transfers)")}:
            self._db.executescript(_ADD_CHANGE_FEED)
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS transfers_change_seq ON transfers (change_seq)")
        self._lock = threading.Lock()
        (last,) = self._db.execute("SELECT COALESCE(MAX(change_seq), 0) FROM transfers").fetchone()
        self._last_change = int(last)

    def _next_change(self) -> int:
        """The next place in the change feed; called under the lock."""
        self._last_change += 1
        return self._last_change

    def _row(self, where: str, value: str) -> Transfer | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM transfers WHERE {where} = ?",
            (value,),
        ).fetchone()
        return None if row is None else Transfer(*row)

    def apply(self, key: str, request: dict[str, str]) -> tuple[Transfer, bool]:
        """Apply once per key; returns (transfer, replayed). A voided key is not applied."""
        request_hash = json.dumps(request, sort_keys=True)
        with self._lock:
            existing = self._row("idempotency_key", key)
            if existing is not None:
                if existing.request_hash != request_hash:
                    raise KeyReused(key)
                return existing, True
            transfer = Transfer(
                id=str(uuid.uuid4()),
                idempotency_key=key,
                reference=request["reference"],
                account=request["account"],
                currency=request["currency"],
                amount=request["amount"],
                status="applied",
                created_at=datetime.now(UTC).isoformat(),
                request_hash=request_hash,
                change_seq=self._next_change(),
            )
            self._insert(transfer)
            return transfer, False

    def void(self, key: str, reference: str) -> Transfer:
        """Make sure `key` is never applied: returns the applied transfer if it already was."""
        with self._lock:
            existing = self._row("idempotency_key", key)
            if existing is not None:
                return existing
            transfer = Transfer(
                id=str(uuid.uuid4()), idempotency_key=key, reference=reference, account="", currency="",
                amount="0", status="voided", created_at=datetime.now(UTC).isoformat(), request_hash="",
                change_seq=self._next_change(),
            )
            self._insert(transfer)
            return transfer

    def reverse(self, transfer_id: str) -> Transfer | None:
        """The bank takes an applied transfer back (a recall); None if no applied transfer has that id."""
        with self._lock:
            changed = self._db.execute(
                "UPDATE transfers SET status = 'reversed', change_seq = ? WHERE id = ? AND status = 'applied'",
                (self._last_change + 1, transfer_id)).rowcount
            if not changed:
                return None
            self._next_change()
            return self._row("id", transfer_id)

    def _insert(self, t: Transfer) -> None:
        self._db.execute(
            f"INSERT INTO transfers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (t.id, t.idempotency_key, t.reference, t.account, t.currency, t.amount, t.status, t.created_at,
             t.request_hash, t.change_seq),
        )

    def by_key(self, key: str) -> Transfer | None:
        with self._lock:
            return self._row("idempotency_key", key)

    def by_reference(self, reference: str) -> list[Transfer]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM transfers WHERE reference = ? ORDER BY created_at",
                (reference,),
            ).fetchall()
        return [Transfer(*row) for row in rows]

    def all_applied(self) -> list[Transfer]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM transfers WHERE status = 'applied'").fetchall()
        return [Transfer(*row) for row in rows]

    def changes_after(self, change_seq: int, limit: int) -> list[Transfer]:
        """Up to `limit` transfers whose last change came after `change_seq`, oldest change first:
        a statement that costs what changed since the reader's last visit, not all history."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM transfers WHERE change_seq > ? ORDER BY change_seq "
                                    "LIMIT ?", (change_seq, limit)).fetchall()
        return [Transfer(*row) for row in rows]
