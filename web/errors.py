"""One error shape for the whole API, and the handlers that produce it.

    {"error": {"code": "validation_failed", "message": "...", "fields": {"amount": ["..."]}}}
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from prometheus_client import Counter
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from domain.states import InvalidTransition
from errors import ClientError
from infra.database import is_unreachable

log = logging.getLogger(__name__)

#: A 503's Retry-After: a failover or a PgBouncer restart is over in seconds, and a client that
#: retries too early gets another 503 at no cost to anyone.
DATABASE_RETRY_AFTER_SECONDS = 1
#: The start of the driver's message kept in the log line (it names the host, never a password).
LOGGED_MESSAGE_CHARS = 200

DATABASE_UNAVAILABLE = Counter("web_database_unavailable_total",
                               "Requests answered 503 because the database could not be reached")


def error_response(
    status: int, code: str, message: str, fields: dict[str, list[str]] | None = None
) -> tuple[Response, int]:
    body: dict[str, object] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return jsonify(error=body), status


def register(app: Flask) -> None:
    @app.errorhandler(ClientError)
    def _domain_error(error: ClientError) -> tuple[Response, int]:
        response, status = error_response(error.status, error.code, error.message, error.fields)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:  # a 429: when to come back
            response.headers["Retry-After"] = str(retry_after)
        return response, status

    @app.errorhandler(InvalidTransition)
    def _invalid_transition(error: InvalidTransition) -> tuple[Response, int]:
        # An operator's action raced a step: the state moved under it.
        return error_response(409, "invalid_transition", f"{error}; look again.")

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> tuple[Response, int]:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return error_response(413, "body_too_large", f"The request body exceeds {limit} bytes.",
                              {"body": [f"Larger than {limit} bytes."]})

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        code = (error.name or "error").lower().replace(" ", "_")
        response, status = error_response(status, code, error.description or error.name)
        # Keep what the exception says beyond its body: a 405's `Allow` (RFC 9110 requires it),
        # a 429's `Retry-After`. Its Content-Type is for the HTML body it no longer has.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        if is_unreachable(error):
            return database_unavailable(error)
        # Logged with its traceback (and sent to Sentry by its logging integration);
        # the client sees no internals.
        log.exception("unhandled error")
        return error_response(500, "internal_error", "An internal error occurred; nothing was changed.")


def database_unavailable(error: Exception) -> tuple[Response, int]:
    """503 with Retry-After. One warning line, no traceback and no Sentry event: an outage fails every
    request the same way; /api/ready shows the outage and the counter counts what it cost."""
    DATABASE_UNAVAILABLE.inc()
    cause = getattr(error, "orig", None) or error
    first_line = (str(cause).strip().splitlines() or [""])[0][:LOGGED_MESSAGE_CHARS]
    log.warning("database unavailable, answered 503: %s (%s.%s): %s", type(error).__name__,
                type(cause).__module__, type(cause).__qualname__, first_line)
    response, status = error_response(
        503, "database_unavailable", "The database could not be reached. Retry with the same Idempotency-Key: "
        "a request that did get through is not applied twice.")
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response, status
