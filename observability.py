"""Logging and Sentry. Without SENTRY_DSN nothing is sent and nothing breaks."""

from __future__ import annotations

import logging

import sentry_sdk

from settings import Settings

_sentry_enabled = False


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
    )


def init_sentry(settings: Settings, *, component: str) -> None:
    global _sentry_enabled
    if not settings.sentry_dsn or _sentry_enabled:
        return
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment,
        integrations=[FlaskIntegration(), SqlalchemyIntegration(), DramatiqIntegration()],
        traces_sample_rate=1.0,
        send_default_pii=False,
    )
    sentry_sdk.set_tag("component", component)
    _sentry_enabled = True


def current_trace_headers() -> dict[str, str] | None:
    """The current trace's propagation headers, stored on outbox rows so the worker continues it."""
    if not _sentry_enabled:
        return None
    headers: dict[str, str] = {}
    traceparent = sentry_sdk.get_traceparent()
    if traceparent:
        headers["sentry-trace"] = traceparent
    baggage = sentry_sdk.get_baggage()
    if baggage:
        headers["baggage"] = baggage
    return headers or None
