"""Helpers for the webhook tests: a real receiver process (examples/webhook_receiver.py) and the
outbox's delivery messages run as a worker would run them."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, select, update

from domain.egress import parse_networks
from harness.net import free_private_port
from harness.processes import Process, clean_environment
from models import outbox_messages
from models.base import utcnow
from services.webhooks.delivery import DeliveryConfig, deliver, webhook_session
from services.webhooks.egress import EgressPolicy
from services.webhooks.events import DELIVER_ACTOR

#: The receivers run on this machine: the tests allow loopback by name, as a private deployment
#: allows its own network (WEBHOOK_ALLOWED_NETWORKS); every other internal address stays refused.
RECEIVER_NETWORKS = "127.0.0.0/8"
LOOPBACK = EgressPolicy(parse_networks(RECEIVER_NETWORKS))

RECEIVER = Path(__file__).resolve().parent.parent / "examples" / "webhook_receiver.py"
#: Retries a test can wait for: eight attempts in well under a second.
FAST = DeliveryConfig(queue="exchanges", schedule=(0.01,) * 7, timeout_seconds=2.0)


@dataclass
class Receiver:
    """The README's receiver, as its own process, on a port of its own."""

    process: Process
    port: int
    out: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self, *secrets: str) -> Receiver:
        """Running, trusting `secrets` (the ones of its first start, when none are given)."""
        if secrets:
            self.process.env["WEBHOOK_SECRET"] = " ".join(secrets)
        self.process.start()
        self.process.wait_for_output("receiving webhooks on", count=self.process.starts)
        return self

    def stop(self) -> None:
        self.process.kill()

    def kept(self) -> list[dict[str, Any]]:
        """Each event it accepted, once, in the order it kept them."""
        return [json.loads(line) for line in self.out.read_text().splitlines()] if self.out.exists() else []


@contextmanager
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver on a port of its own, not started: the test starts (and stops) it."""
    port = free_private_port()
    env = clean_environment()
    out = tmp_path / "events.jsonl"
    process = Process("receiver", (sys.executable, str(RECEIVER), "--port", str(port), "--out", str(out)), env,
                      tmp_path / "receiver.log")
    found = Receiver(process, port, out)
    try:
        yield found
    finally:
        if process.is_running():
            process.kill()


def due_deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox_messages).where(
            outbox_messages.c.actor == DELIVER_ACTOR, outbox_messages.c.published_at.is_(None),
            outbox_messages.c.available_at <= utcnow()).order_by(outbox_messages.c.created_at)))


def run_deliveries(engine: Engine, config: DeliveryConfig = FAST, http: requests.Session | None = None) -> list[str]:
    """Every due delivery message, run once as a worker runs it (and marked published, as the relay
    would); their outcomes."""
    http = http or webhook_session(LOOPBACK)
    outcomes = []
    for message in due_deliveries(engine):
        with engine.begin() as conn:
            conn.execute(update(outbox_messages).where(outbox_messages.c.id == message.id)
                         .values(published_at=utcnow()))
        outcomes.append(deliver(engine, http, config, uuid.UUID(message.payload["delivery_id"]), worker="test"))
    return outcomes
