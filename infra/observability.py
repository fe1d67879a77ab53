"""Logging and Sentry. Without SENTRY_DSN nothing is sent and nothing breaks.

One trace spans web -> relay -> worker: the web request's trace headers are stored on
the outbox row, the relay publishes each message inside a transaction that continues
them, and Sentry's Dramatiq integration in the worker continues them again from the
message's `_sentry_headers` option.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import sentry_sdk

from settings import Settings

#: The message option Sentry's Dramatiq integration reads trace headers from.
SENTRY_HEADERS_OPTION = "_sentry_headers"


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
    )


def init_sentry(settings: Settings, *, component: str, dramatiq: bool = False, **options: Any) -> bool:
    """Start Sentry for this process; `dramatiq` only in workers (it hooks every broker)."""
    if not settings.sentry_dsn or sentry_sdk.get_client().is_active():
        return False
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration

    integrations: list[Any] = [FlaskIntegration(), SqlalchemyIntegration()]
    if dramatiq:
        from sentry_sdk.integrations.dramatiq import DramatiqIntegration

        integrations.append(DramatiqIntegration())
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment,
        integrations=integrations,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        **options,
    )
    sentry_sdk.set_tag("component", component)
    return True


def current_trace_headers() -> dict[str, str] | None:
    """The current trace's propagation headers, stored on outbox rows so the worker continues it.

    None outside a transaction (a request or a step): a thread's ambient trace would
    otherwise join every message it writes into one unrelated trace.
    """
    if not sentry_sdk.get_client().is_active() or sentry_sdk.get_current_span() is None:
        return None
    headers: dict[str, str] = {}
    traceparent = sentry_sdk.get_traceparent()
    if traceparent:
        headers["sentry-trace"] = traceparent
    baggage = sentry_sdk.get_baggage()
    if baggage:
        headers["baggage"] = baggage
    return headers or None


@contextlib.contextmanager
def continued_trace(headers: dict[str, str] | None, name: str) -> Iterator[None]:
    """Run the block in a transaction that continues `headers`' trace (a no-op without Sentry).

    In a scope of its own: `continue_trace` sets the trace on the isolation scope, and left
    there it would become the trace of whatever the thread does next (the next row's publish).
    """
    if not headers or not sentry_sdk.get_client().is_active():
        yield
        return
    with sentry_sdk.isolation_scope():
        transaction = sentry_sdk.continue_trace(headers, op="outbox.publish", name=name)
        with sentry_sdk.start_transaction(transaction):
            yield


def alert(problem: str | BaseException, *, exchange_id: object, step: str, **extra: Any) -> None:
    """A Sentry error event for a person to act on, tagged with the exchange and the step (its actor).

    A no-op without Sentry. In a scope of its own, so the tags do not leak into what the
    thread reports next; the surrounding trace and contexts (the message being processed) stay.
    """
    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("exchange_id", str(exchange_id))
        scope.set_tag("step", step)
        for key, value in extra.items():
            scope.set_extra(key, value)
        if isinstance(problem, BaseException):
            sentry_sdk.capture_exception(problem)
        else:
            sentry_sdk.capture_message(problem, level="error")
