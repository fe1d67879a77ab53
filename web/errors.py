"""One error shape for the whole API, and the handlers that produce it.

    {"error": {"code": "validation_failed", "message": "...", "fields": {"amount": ["..."]}}}
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from domain.states import InvalidTransition
from errors import ClientError

log = logging.getLogger(__name__)


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
        # Logged with its traceback (and sent to Sentry by its Flask integration);
        # the client sees no internals.
        log.exception("unhandled error")
        return error_response(500, "internal_error", "An internal error occurred; nothing was changed.")
