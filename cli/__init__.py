"""Command-line interface: `flask --app app <command>`, one module per area."""

from __future__ import annotations

from flask import Flask

from cli import accounts, errors, reconcile, relay, serve, webhooks


def register(app: Flask) -> None:
    for area in (accounts, relay, reconcile, serve, webhooks):
        area.register(app)
    errors.guard(app.cli)
