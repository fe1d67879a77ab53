"""Operations pages (server-rendered, operator-only): dashboard, exchange timelines, recovery."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, flash, g, jsonify, redirect, render_template, request, url_for

from domain.money import quantize
from domain.states import OPERATOR_ACTIONS, ExchangeState, actions_allowed
from errors import ClientError, ValidationFailed
from models.base import utcnow
from ops import actions, audit, broker, dead_letters, findings
from ops.dashboard import dashboard as read_dashboard
from ops.dashboard import find_exchanges
from services import timeline
from services.exchanges import get_exchange
from services.webhooks import log as webhook_log
from settings import Settings
from web.auth import operator_required
from web.errors import error_response

bp = Blueprint("ops", __name__, url_prefix="/ops", template_folder="templates")
api_bp = Blueprint("ops_api", __name__, url_prefix="/api/ops")

ACTIONS = tuple(OPERATOR_ACTIONS)


@bp.app_template_filter("money")
def money(amount: Decimal | None, currency: str) -> str:
    """An amount as the customer sees it: the currency's minor unit, never "2.5E+2"."""
    return "…" if amount is None else f"{quantize(amount, currency):f}"


@bp.app_template_filter("rate")
def rate(value: Decimal | None) -> str:
    return "" if value is None else f"{value.normalize():f}"


def _settings() -> Settings:
    return current_app.extensions["fx.settings"]


def _engine() -> Any:
    return current_app.extensions["fx.engine"]


def run_action(exchange_id: uuid.UUID, action: str, operator: str) -> str:
    return actions.run_action(_engine(), current_app.extensions["fx.bank"], exchange_id, action, operator,
                              queue=_settings().queue_name)


@bp.get("/")
@operator_required
def dashboard() -> str:
    settings, now = _settings(), utcnow()
    states = [s for s in request.args.getlist("state") if s]
    before = None
    if request.args.get("before"):
        stamp, _, last_id = request.args["before"].partition("|")
        try:
            before = (datetime.fromisoformat(stamp), uuid.UUID(last_id))
        except ValueError:
            before = None
    board = read_dashboard(_engine(), states=states, before=before,
                           stuck_after=timedelta(seconds=settings.stuck_after_seconds),
                           dead_after=timedelta(seconds=settings.process_dead_after_seconds), now=now)
    # None: the broker could not be read, which the page says, rather than "0".
    dead_total: int | None = 0
    dead: list[dead_letters.DeadLetter] = []
    if settings.broker_url.startswith("redis"):
        dead_total, dead = dead_letters.from_redis(settings.broker_url, settings.queue_name)
        dead = dead_letters.with_states(_engine(), dead)
    return render_template(
        "ops/dashboard.html", board=board, broker_view=broker.read(settings.broker_url, settings.queue_name),
        counts=board.counts, stuck=board.stuck, parked=board.parked, failures=board.failures, rows=board.rows,
        findings=board.findings, outbox=board.outbox, dead_total=dead_total, dead=dead, states=states,
        next_cursor=board.next_cursor, stuck_after=settings.stuck_after_seconds, now=now, operator=g.operator,
        embedded_bank=bank_outage_state(),
    )


def bank_outage_state() -> bool | None:
    """In embedded mode (`make run`, its own bank in-process): whether the bank simulates an outage.
    None elsewhere: a real bank has no such switch, and the page shows none."""
    if not current_app.extensions.get("fx.embedded_bank"):
        return None
    try:
        return bool(current_app.extensions["fx.bank"].faults().get("down"))
    except Exception:  # the page still renders; the switch shows the bank as unknown
        return None


@bp.post("/bank-outage")
@operator_required
def bank_outage() -> Any:
    """Embedded mode only: switch the bank's simulated outage on or off (every transfer answered 503)."""
    if not current_app.extensions.get("fx.embedded_bank"):
        return error_response(404, "not_found", "Only the embedded bank of `make run` can simulate an outage.")
    bank = current_app.extensions["fx.bank"]
    if request.form.get("down") == "on":
        bank.set_faults(down=True)
        flash("The bank now answers every transfer with 503: watch exchanges retry, then refund.", "ok")
    else:
        bank.reset_faults()
        flash("The bank answers again.", "ok")
    return redirect(url_for("ops.dashboard"))  # type: ignore[return-value]


@bp.get("/exchanges/<uuid:exchange_id>")
@operator_required
def exchange_page(exchange_id: uuid.UUID) -> str:
    exchange = get_exchange(_engine(), exchange_id)
    entries = timeline.of_exchange(_engine(), exchange_id)
    with _engine().begin() as conn:
        trail = audit.entries(conn, exchange_id=exchange_id)
    # Trouble on an exchange that completed anyway is history, not an alert.
    resolved = exchange.state == ExchangeState.COMPLETED
    hooks = webhook_log.deliveries(_engine(), exchange_id=exchange_id)
    return render_template("ops/exchange.html", exchange=exchange, entries=entries, webhooks=hooks,
                           trouble=timeline.first_trouble(entries), trouble_resolved=resolved,
                           actions=actions_allowed(ExchangeState(exchange.state)), audit=trail, operator=g.operator)


@bp.get("/audit")
@operator_required
def audit_page() -> str:
    with _engine().begin() as conn:
        trail = audit.entries(conn, operator=request.args.get("operator") or None)
    return render_template("ops/audit.html", audit=trail, operator=g.operator)


@bp.get("/search")
@operator_required
def search() -> Any:
    query = request.args.get("q", "").strip()
    rows = find_exchanges(_engine(), query) if query else []
    if len(rows) == 1 and str(rows[0].id) == query:
        return redirect(url_for("ops.exchange_page", exchange_id=rows[0].id))
    return render_template("ops/search.html", query=query, rows=rows, operator=g.operator)


@bp.post("/exchanges/<uuid:exchange_id>/actions/<action>")
@operator_required
def exchange_action(exchange_id: uuid.UUID, action: str) -> Response:
    try:
        flash(run_action(exchange_id, action, g.operator), "ok")
    except ClientError as refusal:
        flash(refusal.message, "refused")
    return redirect(url_for("ops.exchange_page", exchange_id=exchange_id))  # type: ignore[return-value]


@bp.post("/webhook-deliveries/<uuid:delivery_id>/replay")
@operator_required
def webhook_replay(delivery_id: uuid.UUID) -> Response:
    found = webhook_log.owner_of(_engine(), delivery_id, None)
    flash(actions.replay_webhook(_engine(), delivery_id, g.operator, queue=_settings().queue_name), "ok")
    return redirect(url_for("ops.exchange_page", exchange_id=found.exchange_id))  # type: ignore[return-value]


@bp.post("/exchanges/<uuid:exchange_id>/note")
@operator_required
def exchange_note(exchange_id: uuid.UUID) -> Response:
    try:
        flash(actions.add_note(_engine(), exchange_id, g.operator, request.form.get("note", "")), "ok")
    except ClientError as refusal:
        flash(refusal.message, "refused")
    return redirect(url_for("ops.exchange_page", exchange_id=exchange_id))  # type: ignore[return-value]


@api_bp.post("/exchanges/<uuid:exchange_id>/actions/<action>")
@operator_required
def exchange_action_api(exchange_id: uuid.UUID, action: str) -> tuple[Response, int]:
    result = run_action(exchange_id, action, g.operator)
    return jsonify(exchange_id=str(exchange_id), action=action, result=result, operator=g.operator), 202


@api_bp.get("/exchanges/<uuid:exchange_id>/timeline")
@operator_required
def exchange_timeline_api(exchange_id: uuid.UUID) -> Response:
    """The full timeline: every step, attempt, outcome, worker and error; the latest trouble first."""
    row = get_exchange(_engine(), exchange_id)
    entries = timeline.of_exchange(_engine(), exchange_id)
    trouble = timeline.first_trouble(entries)
    return jsonify(id=str(row.id), state=row.state, step=row.step, attempt=row.attempt, last_error=row.last_error,
                   failure_code=row.failure_code, trouble=None if trouble is None else trouble.as_json(),
                   events=[entry.as_json() for entry in entries])


FINDING_ACTIONS = {"acknowledge": findings.acknowledge, "resolve": findings.resolve}


def run_finding_action(finding_id: int, action: str, operator: str, note: str) -> str:
    act = FINDING_ACTIONS.get(action)
    if act is None:
        raise actions.UnknownAction(f"No action {action!r} on a finding; use one of {', '.join(FINDING_ACTIONS)}.")
    return act(_engine(), finding_id, operator, note)


@bp.post("/findings/<int:finding_id>/<action>")
@operator_required
def finding_action(finding_id: int, action: str) -> Response:
    try:
        flash(run_finding_action(finding_id, action, g.operator, request.form.get("note", "")), "ok")
    except ClientError as refusal:
        flash(refusal.message, "refused")
    return redirect(url_for("ops.dashboard"))  # type: ignore[return-value]


@api_bp.post("/findings/<int:finding_id>/<action>")
@operator_required
def finding_action_api(finding_id: int, action: str) -> tuple[Response, int]:
    body = request.get_json(silent=True)
    note = body.get("note", "") if isinstance(body, dict) else ""
    if not isinstance(note, str):
        raise ValidationFailed("The request has invalid fields.", fields={"note": ["Must be a string."]})
    result = run_finding_action(finding_id, action, g.operator, note)
    return jsonify(finding_id=finding_id, action=action, result=result, operator=g.operator), 200
