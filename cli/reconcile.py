"""The reconciler: one pass, or the daemon (the Procfile's `reconciler:`)."""

from __future__ import annotations

from datetime import timedelta

import click
from flask import Flask

from cli.context import bank, engine, settings
from ops.reconciler import reconcile_once, run_daemon


def register(app: Flask) -> None:
    @app.cli.group("reconcile")
    def reconcile_group() -> None:
        """The reconciler: re-enqueue stuck exchanges, compare our ledger with the bank."""

    @reconcile_group.command("once")
    def reconcile_once_command() -> None:
        """One pass; prints what was re-enqueued and every ledger/bank mismatch.

        Exits 0 when ledger and bank agree, 1 when it found a mismatch, 3 when it could not compare them.
        """
        config = settings()
        report = reconcile_once(engine(), bank(), stuck_after=timedelta(seconds=config.stuck_after_seconds),
                                queue=config.queue_name)
        for line in report.lines():
            click.echo(line)
        raise SystemExit(report.exit_code)

    @reconcile_group.command("run")
    def reconcile_run() -> None:
        """Run the reconciler daemon until SIGTERM/SIGINT (the Procfile's `reconciler:`)."""
        run_daemon(settings(), engine(), bank())
