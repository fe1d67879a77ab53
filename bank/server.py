"""The bank's HTTP API.

    POST /transfers            Idempotency-Key header required; applies once, replays after
    POST /transfers/void       makes a key unusable unless it was already applied
    POST /transfers/<id>/reverse  takes an applied transfer back (a recall, done at the bank by hand)
    GET  /transfers/by-key/<k> the bank's record for a key (404 if none)
    GET  /transfers?reference=<exchange id>
    GET  /transfers/changes?after=<n>&limit=<m>  transfers changed after place n of the change feed
    GET|POST /_faults          read / change the fault controls; POST /_faults/reset

Contract for clients: 2xx means applied (and recorded), 4xx and 5xx mean NOT applied;
only a call that gets no answer (a timeout) has an unknown outcome.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from bank.faults import FaultControl
from bank.store import KeyReused, TransferStore

DEFAULT_BANK_DB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "instance", "bank.db")


bp = Blueprint("bank", __name__)

#: What a garbled answer says (fault `garbled`): a 200 whose body is no transfer.
GARBLED_ANSWER = {"result": "ok", "note": "this is not the API you are looking for"}


def create_app(db_path: str | None = None, seed: int | None = None) -> Flask:
    app = Flask(__name__)
    app.extensions["bank.store"] = TransferStore(db_path or os.environ.get("BANK_DB_PATH") or DEFAULT_BANK_DB)
    app.extensions["bank.faults"] = FaultControl(seed)
    app.register_blueprint(bp)
    return app


def problem(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _store() -> TransferStore:
    return current_app.extensions["bank.store"]


def _faults() -> FaultControl:
    return current_app.extensions["bank.faults"]


@bp.post("/transfers")
def create_transfer() -> Any:
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        return problem(400, "Idempotency-Key header is required")
    body = request.get_json(silent=True) or {}
    try:
        amount = Decimal(str(body.get("amount")))
        fields = {k: str(body[k]) for k in ("reference", "account", "currency")}
    except (InvalidOperation, KeyError):
        amount = Decimal(0)
    # Checked with `if`, not `assert`: an assertion is gone under `python -O`.
    if not amount.is_finite() or amount <= 0:
        return problem(422, "reference, account, currency and a positive amount are required")
    fail, stall = _faults().draw()
    settings = _faults().snapshot()
    if settings.latency_ms:
        time.sleep(settings.latency_ms / 1000)
    if fail:
        return problem(503, "bank unavailable (nothing applied)")
    try:
        transfer, replayed = _store().apply(key, {**fields, "amount": str(amount)})
    except KeyReused:
        return problem(422, "Idempotency-Key reused with a different request")
    if stall:
        # Applied, but the answer comes too late: the client times out.
        time.sleep(settings.stall_ms / 1000)
    if _faults().garble():
        return GARBLED_ANSWER, 200
    response = jsonify(transfer.as_json())
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 200 if replayed else 201


@bp.post("/transfers/void")
def void_transfer() -> Any:
    body = request.get_json(silent=True) or {}
    key, reference = body.get("idempotency_key"), body.get("reference", "")
    if not key:
        return problem(422, "idempotency_key is required")
    if _faults().snapshot().down:
        return problem(503, "bank unavailable")
    record = _store().void(str(key), str(reference))
    return (GARBLED_ANSWER, 200) if _faults().garble() else jsonify(record.as_json())


@bp.post("/transfers/<transfer_id>/reverse")
def reverse_transfer(transfer_id: str) -> Any:
    transfer = _store().reverse(transfer_id)
    return jsonify(transfer.as_json()) if transfer else problem(404, "no applied transfer with that id")


@bp.get("/transfers/by-key/<path:key>")
def transfer_by_key(key: str) -> Any:
    if _faults().snapshot().down:
        return problem(503, "bank unavailable")
    transfer = _store().by_key(key)
    return jsonify(transfer.as_json()) if transfer else problem(404, "no transfer with that key")


@bp.get("/transfers")
def transfers_by_reference() -> Any:
    reference = request.args.get("reference")
    transfers = _store().by_reference(reference) if reference else _store().all_applied()
    return jsonify(transfers=[t.as_json() for t in transfers])


#: The most transfers one page of the change feed holds.
MAX_CHANGES_PAGE = 1000


@bp.get("/transfers/changes")
def transfer_changes() -> Any:
    if _faults().snapshot().down:
        return problem(503, "bank unavailable")
    try:
        after = int(request.args.get("after", "0"))
        limit = int(request.args.get("limit", str(MAX_CHANGES_PAGE)))
    except ValueError:
        return problem(400, "after and limit must be whole numbers")
    if after < 0 or not 1 <= limit <= MAX_CHANGES_PAGE:
        return problem(400, f"after must be >= 0 and limit between 1 and {MAX_CHANGES_PAGE}")
    changed = _store().changes_after(after, limit)
    return jsonify(transfers=[t.as_json() for t in changed], cursor=changed[-1].change_seq if changed else after)


@bp.get("/_faults")
def read_faults() -> Any:
    return jsonify(asdict(_faults().snapshot()))


@bp.post("/_faults")
def change_faults() -> Any:
    try:
        return jsonify(asdict(_faults().update(request.get_json(silent=True) or {})))
    except (ValueError, TypeError) as error:
        return problem(422, str(error))


@bp.post("/_faults/reset")
def reset_faults() -> Any:
    return jsonify(asdict(_faults().reset()))


@bp.get("/health")
def health() -> Any:
    return jsonify(status="ok")

