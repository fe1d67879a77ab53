"""The web killed with kill -9 between its commit and its direct send: nothing lost, nothing doubled.

gunicorn, a Dramatiq worker and the relay run as real processes on Redis; the web's
`accept.before_direct_send` failpoint SIGKILLs its worker process right after the accept
committed and before the message went to the broker. The client sees the connection drop,
retries with the same Idempotency-Key and gets the one exchange; the relay sends its first
message once the grace (OUTBOX_DIRECT_GRACE_SECONDS, 3 s in tests) runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, select

from harness import invariants
from harness.outcome import wait_settled
from harness.topology import Topology
from harness.waits import wait_until
from models import exchanges, outbox_messages
from services.accounts import open_account
from services.credentials import Role, create_customer, issue_api_key
from tests.support.redis_topology import redis_topology

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

SETTLE_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def topology(pg_engine: Engine, postgres_url: str, tmp_path: Path) -> Iterator[Topology]:
    with redis_topology(pg_engine, postgres_url, tmp_path, "direct") as topo:
        yield topo


def post(topo: Topology, api_key: str, account: uuid.UUID, key: str) -> requests.Response:
    return requests.post(f"{topo.web_url}/api/exchanges", timeout=10,
                         json={"account": str(account), "from_currency": "CAD", "to_currency": "USD",
                               "amount": "25.00"},
                         headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key})


def test_a_web_killed_between_its_commit_and_its_send_makes_one_exchange_which_the_relay_finishes(
        topology: Topology) -> None:
    customer = create_customer(topology.engine, "Killed Web")
    account = open_account(topology.engine, "Killed Web", {"CAD": Decimal("100.00")}, customer_id=customer)
    api_key = issue_api_key(topology.engine, role=Role.CUSTOMER, label="killed-web", customer_id=customer)
    bank = topology.start_bank()
    topology.start_web(failpoints="accept.before_direct_send=kill")

    with pytest.raises(requests.ConnectionError):
        post(topology, api_key, account, "kill-me")  # its process died after the commit
    with topology.engine.connect() as conn:
        [row] = conn.execute(select(outbox_messages)).all()
        assert conn.execute(select(exchanges.c.state)).scalars().all() == ["pending"]
    assert row.published_at is None and row.available_at > row.created_at  # committed, never sent

    # gunicorn replaces its worker; the retry is the same exchange, and sends nothing.
    retried: list[requests.Response] = []
    wait_until(lambda: _answered(retried, topology, api_key, account), 30,
               what=lambda: "the web to answer the retry\n" + topology.describe())
    assert retried[-1].status_code == 202, retried[-1].text

    topology.start_worker("a")
    topology.start_relay_thread()
    states = wait_settled(topology, SETTLE_TIMEOUT_SECONDS)
    assert states == {"completed": 1}
    with topology.engine.connect() as conn:
        assert retried[-1].json()["id"] == str(conn.execute(select(exchanges.c.id)).scalar_one())
        quote_row = conn.execute(select(outbox_messages).where(outbox_messages.c.id == row.id)).one()
    assert quote_row.attempts == 1  # published by the relay (a taken row keeps 0 attempts)
    assert len(bank.all_applied()) == 1
    report = invariants.check(topology.engine, bank=bank, settled=True)
    assert report.ok, f"{report}\n{topology.describe()}"


def _answered(seen: list[requests.Response], topo: Topology, api_key: str, account: uuid.UUID) -> bool:
    try:
        seen.append(post(topo, api_key, account, "kill-me"))
    except requests.ConnectionError:
        return False
    return True
