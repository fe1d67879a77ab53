"""Per-API-key rate limits on the JSON API (Flask-Limiter), answered 429 in the error shape."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, request
from flask_limiter import Limiter

from settings import Settings


def rate_limit_key() -> str:
    """The API key's public prefix when there is one, else the client's address."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.count("_") >= 2:
        return "key:" + key.split("_", 2)[1]
    return "ip:" + (request.remote_addr or "?")


def install(app: Flask, settings: Settings, *blueprints: Blueprint) -> Limiter:
    limiter = Limiter(rate_limit_key, app=app, storage_uri=settings.rate_limit_storage_url, headers_enabled=True)
    for blueprint in blueprints:
        # Shared: one budget per key across every route of these blueprints (`limit` would count
        # each route apart, giving a key the limit once per endpoint).
        limiter.shared_limit(lambda: current_app.extensions["fx.settings"].api_rate_limit,
                             scope="api")(blueprint)
    return limiter
