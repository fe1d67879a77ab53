"""The workflow the actors run, composed once per process from settings (or handed in)."""

from __future__ import annotations

import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import Engine

from bank.client import BankClient
from database import make_engine
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider, parse_rate_table
from services.workflow import Workflow, WorkflowConfig
from settings import Settings

#: Where the bank service listens when BANK_URL is not set (the Procfile's `bank:` default).
DEFAULT_BANK_URL = "http://127.0.0.1:8100"

_workflow: Workflow | None = None
_lock = threading.Lock()


def build_workflow(settings: Settings, engine: Engine | None = None, bank_url: str | None = None) -> Workflow:
    # No pre-ping: a step on a dead connection fails and Dramatiq retries it.
    engine = engine or make_engine(settings.database_url, pre_ping=False, **settings.engine_options())
    rates = {**DEFAULT_USD_VALUES, **parse_rate_table(settings.fx_rates)}
    return Workflow(
        engine=engine,
        bank=bank_client(settings, bank_url),
        rates=TableRateProvider(rates),
        config=WorkflowConfig(
            queue=settings.queue_name,
            lease=timedelta(seconds=settings.step_lease_seconds),
            quote_ttl=timedelta(seconds=settings.quote_ttl_seconds),
            credit_max_attempts=settings.credit_max_attempts,
        ),
    )


def bank_client(settings: Settings, url: str | None = None) -> BankClient:
    return BankClient(url or settings.bank_url or DEFAULT_BANK_URL,
                      connect_timeout=settings.bank_connect_timeout_seconds,
                      read_timeout=settings.bank_read_timeout_seconds)


def configure(workflow: Workflow) -> None:
    global _workflow
    _workflow = workflow


def workflow() -> Workflow:
    """The configured workflow; a worker started by `dramatiq jobs.worker` builds it from the environment."""
    global _workflow
    if _workflow is None:
        with _lock:
            if _workflow is None:
                _workflow = build_workflow(Settings.from_env())
    return _workflow


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
