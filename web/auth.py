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
from web import limits

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
        limits.check_unverified()
        if not request.headers.get("Authorization"):
            limits.spend_unverified()
            return unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
        principal = bearer_principal()
        if principal is None or principal.role is not Role.CUSTOMER:
            limits.spend_unverified()
            return unauthorized("The API key is not valid (unknown, revoked or not a customer key).")
        limits.spend_verified(principal.key_prefix or principal.name)
        g.principal = principal
        return view(*args, **kwargs)

    return wrapped


def _operators(settings: Settings) -> dict[str, str]:
    pairs = (item.partition(":") for item in settings.operators.split(",") if item.strip())
    return {name.strip(): password for name, _, password in pairs}


def authenticate_operator(settings: Settings) -> str | None:
    """The operator's name, or None."""
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        limits.check_unverified()
        principal = bearer_principal()
        if principal is not None and principal.role is Role.OPERATOR:
            return principal.name
        limits.spend_unverified()
        return None
    operators = _operators(settings)
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username and auth.password is not None:
        # Throttled as the portal's sign-in is: per operator name and per address.
        limits.check_sign_in("operator:" + auth.username)
        expected = operators.get(auth.username)
        if expected is not None and hmac.compare_digest(expected.encode(), auth.password.encode()):
            return auth.username
        limits.sign_in_failed("operator:" + auth.username)
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
