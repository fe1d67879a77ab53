"""The embedded mode: the whole system in one process, on SQLite and an in-process broker.

Web server, outbox relay and Dramatiq worker run as threads of one process, so a new
user sees an exchange travel through every part with no server installed.
"""

from __future__ import annotations

import logging
import threading

import click
from dramatiq import Worker
from flask import Flask
from werkzeug.serving import make_server

import migrate
from bank.server import create_app as create_bank
from commands import create_demo_accounts, customer_count, echo_demo
from jobs import runtime
from jobs.broker import build_broker, install
from outbox.daemon import build_relay

log = logging.getLogger(__name__)

#: Worker threads of the in-process Dramatiq worker.
EMBEDDED_WORKER_THREADS = 4


def run_embedded(app: Flask, *, host: str, port: int) -> None:
    settings = app.extensions["fx.settings"]
    engine = app.extensions["fx.engine"]
    migrate.upgrade(engine)
    if customer_count(engine) == 0:
        echo_demo(create_demo_accounts(engine, settings))

    bank_url = settings.bank_url or _start_bank()
    runtime.configure(runtime.build_workflow(settings, engine, bank_url))
    app.extensions["fx.bank"] = runtime.bank_client(settings, bank_url)
    broker = install(build_broker(settings))
    import jobs.actors  # noqa: F401  (declares the actors on the broker just installed)

    broker.declare_queue(settings.queue_name)
    worker = Worker(broker, worker_threads=EMBEDDED_WORKER_THREADS, worker_timeout=100)
    worker.start()
    relay = build_relay(settings, engine, broker)
    relay_thread = threading.Thread(target=relay.run, name="outbox-relay", daemon=True)
    relay_thread.start()

    server = make_server(host, port, app, threaded=True)
    click.echo(f"bank on {bank_url}")
    click.echo(f"serving on http://{host}:{port}  (database: {engine.url.render_as_string()})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        relay.stop()
        relay_thread.join(timeout=10)
        worker.stop()


def _start_bank() -> str:
    """The bank service in a thread on a free port, with its own SQLite file."""
    server = make_server("127.0.0.1", 0, create_bank(), threaded=True)
    threading.Thread(target=server.serve_forever, name="bank", daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"
