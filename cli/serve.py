"""`flask serve`, the embedded mode: the whole system in one process, on SQLite and an in-process broker.

Web server, outbox relay, Dramatiq worker and reconciler run as threads of one process, so a
new user sees an exchange travel through every part with no server installed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import click
from dramatiq import Worker
from flask import Flask, current_app
from sqlalchemy import Engine
from werkzeug.serving import make_server

import bootstrap
from bank.server import create_app as create_bank
from cli.accounts import demo_lines
from infra import migrate
from ops.processes import ProcessRole
from ops.reconciler import run_loop
from services.demo import create_demo_accounts, customer_count

log = logging.getLogger(__name__)

#: In the Flask instance folder, beside the embedded database: the demo logins and keys.
DEMO_FILE = "demo.txt"
#: Worker threads of the in-process Dramatiq worker.
EMBEDDED_WORKER_THREADS = 4
#: How long (ms) an idle in-process worker thread waits for a message before looking again.
EMBEDDED_WORKER_TIMEOUT_MS = 100


def run_embedded(app: Flask, *, host: str, port: int) -> None:
    settings = app.extensions["fx.settings"]
    engine = app.extensions["fx.engine"]
    migrate.upgrade(engine)
    show_demo_credentials(engine, settings.currencies, demo_file(engine, Path(app.instance_path)))

    bank_url = settings.bank_url or _start_bank()
    bank = app.extensions["fx.bank"] = bootstrap.build_bank(settings, bank_url)
    if not settings.bank_url:
        app.extensions["fx.embedded_bank"] = True  # the operations page offers its outage switch
        # Recorded beside the database, so `flask reconcile once` and the others find this bank.
        bootstrap.record_bank_url(settings, bank_url)
    parts = bootstrap.build_worker(settings, workflow=bootstrap.build_workflow(settings, engine, bank))
    parts.broker.declare_queue(settings.queue_name)
    worker = Worker(parts.broker, worker_threads=EMBEDDED_WORKER_THREADS, worker_timeout=EMBEDDED_WORKER_TIMEOUT_MS)
    worker.start()
    app.extensions["fx.sender"] = bootstrap.build_sender(settings, engine, parts.broker)
    relay = bootstrap.build_relay(settings, engine, parts.broker)
    relay_thread = threading.Thread(target=relay.run, name="outbox-relay", daemon=True)
    relay_thread.start()
    relay_heartbeat = bootstrap.build_heartbeat(settings, engine, ProcessRole.RELAY).start()
    stopping = threading.Event()
    reconciler = threading.Thread(target=run_loop, args=(settings, engine, bank, stopping), name="reconciler",
                                  daemon=True)
    reconciler.start()

    server = make_server(host, port, app, threaded=True)
    click.echo(f"bank on {bank_url}")
    click.echo(f"serving on http://{host}:{port}  (database: {engine.url.render_as_string()})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        stopping.set()
        relay.stop()
        relay_thread.join(timeout=10)
        relay_heartbeat.stop()
        reconciler.join(timeout=10)
        worker.stop()


def demo_file(engine: Engine, instance: Path) -> Path:
    """Beside the embedded SQLite database (instance/demo.txt for the default one)."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    return (Path(database).resolve().parent if database and database != ":memory:" else instance) / DEMO_FILE


def show_demo_credentials(engine: Engine, currencies: tuple[str, ...], path: Path) -> None:
    """On a first start, make the demo customers and keep their logins and keys in `path` (keys
    are stored hashed: this file is the only copy); on every start, print them again."""
    if customer_count(engine) == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in demo_lines(create_demo_accounts(engine, currencies))))
        path.chmod(0o600)
    if path.exists():
        click.echo(f"demo logins and API keys (kept in {path}):")
        click.echo(path.read_text(), nl=False)
    else:
        click.echo("customers: flask --app app customers list; a new key: flask --app app api-key create --account ID")


def _start_bank() -> str:
    """The bank service in a thread on a free port, with its own SQLite file."""
    server = make_server("127.0.0.1", 0, create_bank(), threaded=True)
    threading.Thread(target=server.serve_forever, name="bank", daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def register(app: Flask) -> None:
    @app.cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), envvar="PORT",
                  help="also PORT=...; `make run PORT=5077`")
    def serve(host: str, port: int) -> None:
        """Run everything in one process: migrations, web, relay and worker (embedded mode)."""
        run_embedded(current_app._get_current_object(), host=host, port=port)  # type: ignore[attr-defined]
