"""Webhooks under real processes: a Dramatiq worker killed with -9 after the receiver got the call
and before the attempt was recorded loses nothing; the next worker makes the attempt again, and
the receiver, deduplicating on `webhook-id`, keeps each event once."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import standardwebhooks
from sqlalchemy import Engine, select

from harness.outcome import wait_settled
from harness.topology import Topology
from harness.waits import wait_until
from harness.worker_logs import worker_process_pid
from models import webhook_attempts, webhook_deliveries
from services.accounts import open_account
from services.credentials import create_customer
from services.webhooks.endpoints import create_endpoint
from tests.test_workflow_processes import (  # noqa: F401 -- the fixture, shared
    DRAMATIQ_RET_KILLED,
    SETTLE_TIMEOUT_SECONDS,
    assert_invariants,
    exchange_many,
    topology,
)
from tests.webhook_support import LOOPBACK, RECEIVER_NETWORKS, receiver

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

#: A short webhook timeout makes the dead worker's lease short (2 x timeout + 5 s).
WORKER_SETTINGS = {"WEBHOOK_TIMEOUT_SECONDS": "2", "WEBHOOK_ALLOWED_NETWORKS": RECEIVER_NETWORKS}


def statuses(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(select(webhook_deliveries.c.status)).scalars())


def test_a_worker_killed_mid_delivery_loses_no_event_and_the_receiver_keeps_each_once(
    topology: Topology, tmp_path: Path  # noqa: F811
) -> None:
    bank = topology.start_bank()
    owner = create_customer(topology.engine, "Hooked")
    account = open_account(topology.engine, "Hooked", {"CAD": Decimal("1000.00")}, customer_id=owner)
    with receiver(tmp_path) as hooks:
        endpoint = create_endpoint(topology.engine, owner, hooks.url, egress=LOOPBACK)
        hooks.start(endpoint.secret)
        doomed = topology.start_worker("a", failpoints="webhook.after_post=kill", extra=WORKER_SETTINGS)
        topology.start_relay_thread()

        ids = exchange_many(topology, [account], 3)
        assert doomed.wait_exit(SETTLE_TIMEOUT_SECONDS) == DRAMATIQ_RET_KILLED
        # The receiver has the event; our record of the attempt died with the worker.
        assert hooks.kept(), "the worker died before any webhook call"
        with topology.engine.connect() as conn:
            assert not conn.execute(select(webhook_attempts.c.status_code).where(
                webhook_attempts.c.status_code == 204)).first()

        rescuer = topology.start_worker("b", extra=WORKER_SETTINGS)
        rescuer_pid = worker_process_pid(rescuer)
        assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == Counter({"completed": 3})
        wait_until(lambda: statuses(topology.engine) == Counter({"delivered": 3}), SETTLE_TIMEOUT_SECONDS,
                   lambda: f"every delivery delivered; have {statuses(topology.engine)}\n{rescuer.describe()}")

        kept = hooks.kept()
        assert sorted(entry["event"]["data"]["id"] for entry in kept) == sorted(map(str, ids))
        assert len({entry["id"] for entry in kept}) == 3  # each event once
        for entry in kept:
            standardwebhooks.Webhook(endpoint.secret).verify(entry["body"], entry["headers"])
    assert_invariants(topology, bank)
    with topology.engine.connect() as conn:
        delivered_by = list(conn.execute(select(webhook_attempts.c.worker).where(
            webhook_attempts.c.status_code == 204)).scalars())
    # The event the dead worker had sent was sent again, and recorded, by the rescuer.
    assert len(delivered_by) == 3 and all(f":{rescuer_pid}:" in (w or "") for w in delivered_by), delivered_by
