"""A per-session CSRF token for every HTML form that changes something."""

from __future__ import annotations

import hmac
import secrets

from flask import abort, request, session

SESSION_KEY = "csrf_token"
FIELD = "csrf_token"


def csrf_token() -> str:
    token = session.get(SESSION_KEY)
    if token is None:
        token = session[SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Abort with 400 unless the form carries this session's token."""
    expected = session.get(SESSION_KEY)
    sent = request.form.get(FIELD, "")
    if not expected or not hmac.compare_digest(expected, sent):
        abort(400, description="The form's CSRF token is missing or wrong; reload the page and try again.")
