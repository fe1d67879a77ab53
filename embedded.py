"""The embedded mode: the whole system in one process, on SQLite and an in-process broker."""

from __future__ import annotations

import logging

import click
from flask import Flask
from werkzeug.serving import make_server

import migrate
from commands import create_demo_accounts, customer_count

log = logging.getLogger(__name__)


def run_embedded(app: Flask, *, host: str, port: int) -> None:
    settings = app.extensions["fx.settings"]
    engine = app.extensions["fx.engine"]
    migrate.upgrade(engine)
    if customer_count(engine) == 0:
        for owner, account_id in create_demo_accounts(engine, settings):
            click.echo(f"demo account {account_id}  {owner}")
    server = make_server(host, port, app, threaded=True)
    click.echo(f"serving on http://{host}:{port}  (database: {engine.url.render_as_string()})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
