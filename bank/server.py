"""The bank's HTTP API.

    POST /transfers            Idempotency-Key header required; applies once, replays after
    POST /transfers/void       makes a key unusable unless it was already applied
    GET  /transfers/by-key/<k> the bank's record for a key (404 if none)
    GET  /transfers?reference=<exchange id>
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

from flask import Flask, Response, jsonify, request

from bank.faults import FaultControl
from bank.store import KeyReused, TransferStore

DEFAULT_BANK_DB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "instance", "bank.db")


def create_app(db_path: str | None = None, seed: int | None = None) -> Flask:
    app = Flask(__name__)
    store = TransferStore(db_path or os.environ.get("BANK_DB_PATH") or DEFAULT_BANK_DB)
    faults = FaultControl(seed)
    app.extensions["bank.store"] = store
    app.extensions["bank.faults"] = faults

    def problem(status: int, message: str) -> tuple[Response, int]:
        return jsonify(error=message), status

    @app.post("/transfers")
    def create_transfer() -> Any:
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return problem(400, "Idempotency-Key header is required")
        body = request.get_json(silent=True) or {}
        try:
            amount = Decimal(str(body.get("amount")))
            assert amount > 0
            fields = {k: str(body[k]) for k in ("reference", "account", "currency")}
        except (InvalidOperation, AssertionError, KeyError):
            return problem(422, "reference, account, currency and a positive amount are required")
        fail, stall = faults.draw()
        settings = faults.snapshot()
        if settings.latency_ms:
            time.sleep(settings.latency_ms / 1000)
        if fail:
            return problem(503, "bank unavailable (nothing applied)")
        try:
            transfer, replayed = store.apply(key, {**fields, "amount": str(amount)})
        except KeyReused:
            return problem(422, "Idempotency-Key reused with a different request")
        if stall:
            # Applied, but the answer comes too late: the client times out.
            time.sleep(settings.stall_ms / 1000)
        response = jsonify(transfer.as_json())
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response, 200 if replayed else 201

    @app.post("/transfers/void")
    def void_transfer() -> Any:
        body = request.get_json(silent=True) or {}
        key, reference = body.get("idempotency_key"), body.get("reference", "")
        if not key:
            return problem(422, "idempotency_key is required")
        if faults.snapshot().down:
            return problem(503, "bank unavailable")
        return jsonify(store.void(str(key), str(reference)).as_json())

    @app.get("/transfers/by-key/<path:key>")
    def transfer_by_key(key: str) -> Any:
        if faults.snapshot().down:
            return problem(503, "bank unavailable")
        transfer = store.by_key(key)
        return jsonify(transfer.as_json()) if transfer else problem(404, "no transfer with that key")

    @app.get("/transfers")
    def transfers_by_reference() -> Any:
        reference = request.args.get("reference")
        transfers = store.by_reference(reference) if reference else store.all_applied()
        return jsonify(transfers=[t.as_json() for t in transfers])

    @app.get("/_faults")
    def read_faults() -> Any:
        return jsonify(asdict(faults.snapshot()))

    @app.post("/_faults")
    def change_faults() -> Any:
        try:
            return jsonify(asdict(faults.update(request.get_json(silent=True) or {})))
        except (ValueError, TypeError) as error:
            return problem(422, str(error))

    @app.post("/_faults/reset")
    def reset_faults() -> Any:
        return jsonify(asdict(faults.reset()))

    @app.get("/health")
    def health() -> Any:
        return jsonify(status="ok")

    return app
