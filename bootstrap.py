"""The composition root: every process builds its parts here, from one Settings.

`app.py` (web), `jobs/worker.py` (`dramatiq jobs.worker`), the CLI commands (relay,
reconciler) and the embedded mode all call these functions; nothing else builds an
engine, a bank client, a broker, the workflow or a relay, and nothing reads settings at
import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import dramatiq
from sqlalchemy import Engine, make_url

from bank.client import BankClient
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider, parse_rate_table
from errors import ConfigError
from infra.database import is_postgres, make_engine
from jobs.actors import declare_actors
from jobs.broker import build_broker
from jobs.final_error import KeepFinalError
from jobs.lifecycle import ProcessLifecycle
from jobs.retry_clock import RetryClock
from jobs.webhooks import declare_webhook_actor
from ops.processes import Heartbeat, ProcessRole
from outbox.direct import DirectSender
from outbox.leadership import Leadership
from outbox.publisher import publisher_for
from outbox.relay import Relay, RelayConfig
from outbox.wakeup import ListenWaiter, PollWaiter, Waiter
from services.webhooks.events import DELIVER_ACTOR
from services.workflow import Workflow, WorkflowConfig
from services.workflow.runner import note_next_attempt
from settings import Settings

#: Where the bank service listens when BANK_URL is not set (the Procfile's `bank:` default).
DEFAULT_BANK_URL = "http://127.0.0.1:8100"
#: The relay's own small pool: one connection for batches, one to LISTEN, spares for a reconnect.
RELAY_POOL_SIZE = 2


class Role(StrEnum):
    WEB = "web"
    WORKER = "worker"
    RELAY = "relay"
    RECONCILER = "reconciler"


def load_settings() -> Settings:
    """The environment's settings; a bad one ends the process with one clear line and status 2."""
    try:
        return Settings.from_env()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def build_engine(settings: Settings, role: Role) -> Engine:
    """The web pre-pings each checkout (a failover costs no request an error); relays and workers
    do not: a step or a batch on a dead connection fails, and is retried."""
    if role is Role.RELAY and settings.database_url.startswith("postgresql"):
        return make_engine(settings.database_url, pool_size=RELAY_POOL_SIZE, max_overflow=RELAY_POOL_SIZE,
                           pre_ping=False, idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
                           transaction_pooler=settings.db_transaction_pooler,
                           connect_timeout_seconds=settings.db_connect_timeout_seconds,
                           tcp_user_timeout_ms=settings.db_tcp_user_timeout_ms)
    return make_engine(settings.database_url, pre_ping=role is Role.WEB or role is Role.RECONCILER,
                       **settings.engine_options())


#: Beside the embedded SQLite database: the address of the bank `make run` started.
BANK_URL_FILE = "bank-url"


def _bank_url_file(settings: Settings) -> Path | None:
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve().parent / BANK_URL_FILE


def record_bank_url(settings: Settings, bank_url: str) -> None:
    path = _bank_url_file(settings)
    if path is not None:
        path.write_text(bank_url + "\n")


def build_bank(settings: Settings, url: str | None = None) -> BankClient:
    """BANK_URL; else, on the embedded database, the bank `make run` recorded; else DEFAULT_BANK_URL."""
    recorded = _bank_url_file(settings)
    if not url and not settings.bank_url and recorded is not None and recorded.exists():
        url = recorded.read_text().strip()
    return BankClient(url or settings.bank_url or DEFAULT_BANK_URL,
                      connect_timeout=settings.bank_connect_timeout_seconds,
                      read_timeout=settings.bank_read_timeout_seconds)


def workflow_config(settings: Settings) -> WorkflowConfig:
    return WorkflowConfig(
        queue=settings.queue_name,
        lease=timedelta(seconds=settings.step_lease_seconds),
        quote_ttl=timedelta(seconds=settings.quote_ttl_seconds),
        credit_max_attempts=settings.credit_max_attempts,
    )


def build_rates(settings: Settings) -> TableRateProvider:
    """The rate table: the built-in one, with FX_RATES over it. The web quotes from it, workers price from it."""
    return TableRateProvider({**DEFAULT_USD_VALUES, **parse_rate_table(settings.fx_rates)})


def build_workflow(settings: Settings, engine: Engine, bank: BankClient) -> Workflow:
    return Workflow(engine=engine, bank=bank, rates=build_rates(settings), config=workflow_config(settings))


def build_sender(settings: Settings, engine: Engine, broker: dramatiq.Broker | None = None) -> DirectSender | None:
    """The web's direct sender (OUTBOX_DIRECT_SEND): Redis pipelined, RabbitMQ or the embedded
    broker through `broker`; None when it is off, or embedded without the in-process broker."""
    if not settings.outbox_direct_send or (settings.embedded_broker and broker is None):
        return None
    if broker is None and not settings.broker_url.startswith(("redis://", "rediss://")):
        broker = build_broker(settings)
    publisher = publisher_for(settings.broker_url, broker, wakeups=settings.broker_wakeups)
    return DirectSender(engine, publisher, grace=timedelta(seconds=settings.outbox_direct_grace_seconds))


def relay_config(settings: Settings) -> RelayConfig:
    return RelayConfig(
        batch_size=settings.relay_batch_size,
        poll_interval_seconds=settings.relay_poll_interval_seconds,
        max_backoff_seconds=settings.relay_max_backoff_seconds,
        retention=timedelta(hours=settings.relay_retention_hours),
        coalesce_seconds=settings.relay_coalesce_ms / 1000,
    )


def build_relay(settings: Settings, engine: Engine, broker: dramatiq.Broker | None = None) -> Relay:
    """Redis gets pipelined batches; RabbitMQ and the embedded broker publish through `broker`."""
    if broker is None and not settings.broker_url.startswith(("redis://", "rediss://")):
        broker = build_broker(settings)
    waiter: Waiter
    leadership = None
    if is_postgres(engine):
        # Any number of relay processes; one publishes at a time.
        # PostgreSQL itself when the engine goes through a transaction pooler (DATABASE_DIRECT_URL).
        waiter = ListenWaiter(settings.database_direct_url or engine)
        leadership = Leadership(engine, lease=timedelta(seconds=settings.relay_lease_seconds))
    else:
        waiter = PollWaiter(engine)  # SQLite: the embedded mode's one relay, in the one process
    publisher = publisher_for(settings.broker_url, broker, wakeups=settings.broker_wakeups)
    return Relay(engine, publisher, relay_config(settings), waiter=waiter, leadership=leadership)


@dataclass
class Worker:
    """A worker process's parts: the broker its actors are bound to, and the workflow they run."""

    broker: dramatiq.Broker
    workflow: Workflow
    actors: dict[str, dramatiq.Actor] = field(default_factory=dict)


def build_worker(settings: Settings, *, workflow: Workflow | None = None,
                 broker: dramatiq.Broker | None = None) -> Worker:
    """The broker (made Dramatiq's global one, which its worker CLI reads) with every actor declared."""
    broker = broker or build_broker(settings)
    dramatiq.set_broker(broker)
    if workflow is None:
        engine = build_engine(settings, Role.WORKER)
        workflow = build_workflow(settings, engine, build_bank(settings))
    heartbeat: list[Heartbeat] = []
    lifecycle = ProcessLifecycle(
        on_boot=lambda: heartbeat.append(build_heartbeat(settings, workflow.engine, ProcessRole.WORKER,
                                                         holding=lifecycle.in_hand).start()),
        on_shutdown=lambda: [beat.stop() for beat in heartbeat],
    )
    broker.add_middleware(lifecycle)
    broker.add_middleware(KeepFinalError())
    broker.add_middleware(RetryClock(partial(note_next_attempt, workflow)))
    actors = declare_actors(broker, settings, workflow)
    actors[DELIVER_ACTOR] = declare_webhook_actor(broker, settings, workflow.engine)
    return Worker(broker, workflow, actors)


def build_heartbeat(settings: Settings, engine: Engine, role: ProcessRole,
                    holding: Callable[[], dict[str, Any]] | None = None) -> Heartbeat:
    """This process's heartbeat (not started): call `start()` when it begins its work."""
    return Heartbeat(engine, role, interval_seconds=settings.heartbeat_interval_seconds, holding=holding)
