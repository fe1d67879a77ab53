"""Browser-facing defences on every answer: security headers and the session cookie's flags."""

from __future__ import annotations

from flask import Flask, Response, request

from settings import Settings

#: The pages carry their CSS inline and no script; the API docs run Swagger UI's inline start-up.
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; " \
      "base-uri 'none'; form-action 'self'; object-src 'none'"
DOCS_CSP = CSP.replace("default-src 'self';", "default-src 'self'; script-src 'self' 'unsafe-inline';")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def install(app: Flask, settings: Settings) -> None:
    # Secure outside development: a production or staging session never travels over plain HTTP.
    secure = settings.environment != "development"
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=secure)

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Content-Security-Policy", DOCS_CSP if request.path == "/api/docs" else CSP)
        if secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response
