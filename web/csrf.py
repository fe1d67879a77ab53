"""CSRF: Flask-WTF's CSRFProtect on every form that changes something.

Tokens are signed with the app's secret, bound to the session and time-limited (CSRF_TIME_LIMIT_SECONDS:
a page left open longer asks to be reloaded). The JSON APIs authenticate each request by its
`Authorization` header, which a browser never adds on its own: they are exempt.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

from settings import Settings
from web.errors import error_response

protect = CSRFProtect()
#: Every template writes `{{ csrf_token() }}` into its forms.
csrf_token = generate_csrf


def install(app: Flask, settings: Settings, *exempt: Blueprint) -> None:
    app.config.update(WTF_CSRF_TIME_LIMIT=int(settings.csrf_time_limit_seconds), WTF_CSRF_FIELD_NAME="csrf_token")
    protect.init_app(app)
    for blueprint in exempt:
        protect.exempt(blueprint)
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.errorhandler(CSRFError)
    def _refused(error: CSRFError) -> tuple[Response, int]:
        return error_response(400, "csrf_failed", "The form's CSRF token is missing or wrong (or has expired); "
                                                  "reload the page and try again.", {"csrf_token": [error.description]})
