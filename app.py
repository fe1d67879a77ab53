"""Application factory: it reads like a table of contents. `app` serves gunicorn (`app:app`)."""

from __future__ import annotations

from typing import Any

from flask import Flask

import bootstrap
import cli
from infra import observability
from settings import Settings
from web import (
    api,
    csrf,
    dead_letters,
    errors,
    health,
    limits,
    metrics,
    openapi,
    openapi_ops,
    ops,
    portal,
    security,
    webhooks,
)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or bootstrap.load_settings()
    observability.configure_logging(settings)
    observability.init_sentry(settings, component="web")

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.extensions["fx.settings"] = settings
    app.extensions["fx.engine"] = bootstrap.build_engine(settings, bootstrap.Role.WEB)
    app.extensions["fx.bank"] = bootstrap.build_bank(settings)
    app.extensions["fx.rates"] = bootstrap.build_rates(settings)
    app.extensions["fx.sender"] = bootstrap.build_sender(settings, app.extensions["fx.engine"])

    errors.register(app)
    security.install(app, settings)
    csrf.install(app, settings, api.bp, webhooks.bp, ops.api_bp, dead_letters.api_bp)
    limits.install(app, settings)
    for blueprint in (api.bp, health.bp, ops.bp, ops.api_bp, dead_letters.bp, dead_letters.api_bp, metrics.bp,
                      openapi.bp, openapi_ops.bp, portal.bp, webhooks.bp):
        app.register_blueprint(blueprint)
    cli.register(app)
    return app


def __getattr__(name: str) -> Any:
    # `app:app` for gunicorn without building an app on every import of this module.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
