"""Operators sign in to the operations pages with HTTP Basic (OPERATORS="name:password,...").

With no OPERATORS outside production, the pages are open to a local operator, so the
embedded demo needs no set-up.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, g, request

from settings import Settings

LOCAL_OPERATOR = "local-operator"


def _operators(settings: Settings) -> dict[str, str]:
    pairs = (item.partition(":") for item in settings.operators.split(",") if item.strip())
    return {name.strip(): password for name, _, password in pairs}


def authenticate(settings: Settings) -> str | None:
    """The operator's name, or None."""
    operators = _operators(settings)
    if not operators:
        return None if settings.environment == "production" else LOCAL_OPERATOR
    auth = request.authorization
    if auth is None or auth.username is None or auth.password is None:
        return None
    expected = operators.get(auth.username)
    if expected is None or not hmac.compare_digest(expected.encode(), auth.password.encode()):
        return None
    return auth.username


def operator_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        name = authenticate(current_app.extensions["fx.settings"])
        if name is None:
            response = Response('{"error": {"code": "unauthorized", "message": "Operator sign-in required."}}',
                                status=401, mimetype="application/json")
            response.headers["WWW-Authenticate"] = 'Basic realm="fx operations"'
            return response
        g.operator = name
        return view(*args, **kwargs)

    return wrapped
