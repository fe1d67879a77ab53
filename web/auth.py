"""Who is calling, and what they may see.

- Customers call the JSON API with `Authorization: Bearer <API key>`; every endpoint
  only shows and moves what the key's customer owns (anything else answers 404).
- Customers use the web portal after signing in with e-mail and password (a session).
- Operators use the operations pages and API with an operator API key (Bearer), or HTTP
  Basic with OPERATORS="name:password,...". With neither configured outside production,
  the operations pages are open to a local operator, so the embedded demo needs no set-up.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, g, jsonify, request, session

from services.credentials import Principal, Role, verify_api_key
from settings import Settings

LOCAL_OPERATOR = "local-operator"
SESSION_CUSTOMER = "customer_id"


def unauthorized(message: str, realm: str = "Bearer") -> Response:
    response = jsonify(error={"code": "unauthorized", "message": message})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = f'{realm} realm="fx"'
    return response


def bearer_principal() -> Principal | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return verify_api_key(current_app.extensions["fx.engine"], key.strip())


def customer_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """The JSON API's guard: a valid customer key, its holder in `g.principal`."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not request.headers.get("Authorization"):
            return unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
        principal = bearer_principal()
        if principal is None or principal.role is not Role.CUSTOMER:
            return unauthorized("The API key is not valid (unknown, revoked or not a customer key).")
        g.principal = principal
        return view(*args, **kwargs)

    return wrapped


def _operators(settings: Settings) -> dict[str, str]:
    pairs = (item.partition(":") for item in settings.operators.split(",") if item.strip())
    return {name.strip(): password for name, _, password in pairs}


def authenticate_operator(settings: Settings) -> str | None:
    """The operator's name, or None."""
    principal = bearer_principal()
    if principal is not None:
        return principal.name if principal.role is Role.OPERATOR else None
    operators = _operators(settings)
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username and auth.password is not None:
        expected = operators.get(auth.username)
        if expected is not None and hmac.compare_digest(expected.encode(), auth.password.encode()):
            return auth.username
        return None
    if not operators and settings.environment != "production" and not settings.operator_keys_only:
        return LOCAL_OPERATOR
    return None


def operator_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        name = authenticate_operator(current_app.extensions["fx.settings"])
        if name is None:
            return unauthorized("Operator sign-in required.", realm="Basic")
        g.operator = name
        return view(*args, **kwargs)

    return wrapped


def portal_customer() -> Any:
    """The signed-in customer's id (web portal), or None."""
    return session.get(SESSION_CUSTOMER)
