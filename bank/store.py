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

    def as_json(self) -> dict[str, str]:
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
    request_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_reference ON transfers (reference);
"""


class TransferStore:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _row(self, where: str, value: str) -> Transfer | None:
        row = self._db.execute(
            "SELECT id, idempotency_key, reference, account, currency, amount, status, created_at, request_hash "
            f"FROM transfers WHERE {where} = ?",
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
            )
            self._insert(transfer)
            return transfer

    def reverse(self, transfer_id: str) -> Transfer | None:
        """The bank takes an applied transfer back (a recall); None if no applied transfer has that id."""
        with self._lock:
            changed = self._db.execute("UPDATE transfers SET status = 'reversed' WHERE id = ? AND status = 'applied'",
                                       (transfer_id,)).rowcount
            return self._row("id", transfer_id) if changed else None

    def _insert(self, t: Transfer) -> None:
        self._db.execute(
            "INSERT INTO transfers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (t.id, t.idempotency_key, t.reference, t.account, t.currency, t.amount, t.status, t.created_at,
             t.request_hash),
        )

    def by_key(self, key: str) -> Transfer | None:
        with self._lock:
            return self._row("idempotency_key", key)

    def by_reference(self, reference: str) -> list[Transfer]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, idempotency_key, reference, account, currency, amount, status, created_at, request_hash "
                "FROM transfers WHERE reference = ? ORDER BY created_at",
                (reference,),
            ).fetchall()
        return [Transfer(*row) for row in rows]

    def all_applied(self) -> list[Transfer]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, idempotency_key, reference, account, currency, amount, status, created_at, request_hash "
                "FROM transfers WHERE status = 'applied'"
            ).fetchall()
        return [Transfer(*row) for row in rows]
