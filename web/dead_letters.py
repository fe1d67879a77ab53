"""Dead-lettered messages (operator-only): each one's detail, and replay or delete, one or in bulk."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from errors import ActionRefused, ClientError
from ops import dead_letters
from ops.actions import UnknownAction
from settings import Settings
from web.auth import operator_required

bp = Blueprint("dead_letters", __name__, url_prefix="/ops/dead-letters", template_folder="templates")
api_bp = Blueprint("dead_letters_api", __name__, url_prefix="/api/ops/dead-letters")

ACTIONS = ("replay", "delete")


def _settings() -> Settings:
    return current_app.extensions["fx.settings"]


def _queue() -> dead_letters.DeadLetterQueue:
    settings = _settings()
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        raise ActionRefused("Dead letters are read from Redis; this system's broker keeps none here.")
    return dead_letters.DeadLetterQueue(settings.broker_url, settings.queue_name)


def run(message_id: str | None, action: str, operator: str, actor: str | None = None) -> str:
    if action not in ACTIONS:
        raise UnknownAction(f"No action {action!r} on a dead letter; use one of {', '.join(ACTIONS)}.")
    dlq, engine, queue = _queue(), current_app.extensions["fx.engine"], _settings().queue_name
    try:
        if message_id is None:
            return dead_letters.bulk(engine, dlq, action, operator, queue=queue, actor=actor)
        if action == "replay":
            return dead_letters.replay(engine, dlq, message_id, operator, queue=queue)
        return dead_letters.delete(engine, dlq, message_id, operator)
    finally:
        dlq.close()


@bp.get("/<message_id>")
@operator_required
def detail(message_id: str) -> Any:
    dlq = _queue()
    try:
        letter = dlq.get(message_id)
    finally:
        dlq.close()
    if letter is None:
        abort(404, f"No dead letter {message_id}.")
    (letter,) = dead_letters.with_states(current_app.extensions["fx.engine"], [letter])
    return render_template("ops/dead_letter.html", letter=letter, operator=g.operator)


@bp.post("/<message_id>/<action>")
@operator_required
def act(message_id: str, action: str) -> Response:
    try:
        flash(run(message_id, action, g.operator), "ok")
    except ClientError as refusal:
        flash(refusal.message, "refused")
    return redirect(url_for("ops.dashboard", _anchor="dead"))  # type: ignore[return-value]


@bp.post("/all/<action>")
@operator_required
def act_on_all(action: str) -> Response:
    try:
        flash(run(None, action, g.operator, actor=request.form.get("actor") or None), "ok")
    except ClientError as refusal:
        flash(refusal.message, "refused")
    return redirect(url_for("ops.dashboard", _anchor="dead"))  # type: ignore[return-value]


@api_bp.post("/<message_id>/<action>")
@operator_required
def act_api(message_id: str, action: str) -> tuple[Response, int]:
    result = run(message_id, action, g.operator)
    return jsonify(message_id=message_id, action=action, result=result, operator=g.operator), 200


@api_bp.post("/all/<action>")
@operator_required
def act_on_all_api(action: str) -> tuple[Response, int]:
    body = request.get_json(silent=True)
    actor = body.get("actor") if isinstance(body, dict) else None
    result = run(None, action, g.operator, actor=actor if isinstance(actor, str) else None)
    return jsonify(action=action, actor=actor, result=result, operator=g.operator), 200
