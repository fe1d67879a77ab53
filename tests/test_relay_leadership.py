"""One active relay at a time (outbox/leadership.py): the others stand by, and take over when the
active one stops, dies or freezes, within its lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, event, select

from harness.waits import wait_until
from models import outbox_messages, relay_leases
from outbox import writer
from outbox.leadership import Leadership
from outbox.publisher import BrokerPublisher
from outbox.relay import Relay, RelayConfig
from outbox.wakeup import ListenWaiter

pytestmark = pytest.mark.postgres

LEASE = timedelta(seconds=1)
POLL_SECONDS = 0.1
WAIT_SECONDS = 20.0
#: Tries of the lease (one per poll interval) a standby is seen to make before it is judged.
STANDBY_TRIES = 3


def test_only_one_of_two_relays_holds_the_lease_and_the_other_takes_it_once_it_expires(pg_engine: Engine) -> None:
    first, second = Leadership(pg_engine, lease=LEASE), Leadership(pg_engine, lease=LEASE)
    taken = time.monotonic()
    assert first.hold() is True
    assert second.hold() is False
    assert first.hold() is True  # within its trust window: no query at all
    # The holder froze: it renews nothing. The second takes the lease at its first try after it ran out,
    # and not before: a whole lease after the first took it.
    wait_until(second.hold, WAIT_SECONDS, "the frozen holder's lease to expire")
    assert time.monotonic() - taken >= LEASE.total_seconds()
    assert first.hold() is False  # woken, it finds the lease taken before its next batch
    second.release()
    assert first.hold() is True  # a clean stop hands over at once


@contextmanager
def relay_thread(engine: Engine, name: str, broker: StubBroker) -> Iterator[Relay]:
    relay = Relay(engine, BrokerPublisher(broker), RelayConfig(poll_interval_seconds=POLL_SECONDS),
                  waiter=ListenWaiter(engine), leadership=Leadership(engine, lease=LEASE, holder=name), name=name)
    thread = threading.Thread(target=relay.run, name=name, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join()
        assert relay.waiter is not None
        relay.waiter.close()


def write(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        writer.enqueue(conn, actor="convert", payload={"n": n}, queue="leader")


def unpublished(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(outbox_messages.c.id).where(outbox_messages.c.published_at.is_(None))).all())


def test_the_standby_runs_no_batches_and_publishes_once_the_active_relay_stops(pg_engine: Engine) -> None:
    broker = StubBroker(middleware=[])
    broker.declare_queue("leader")
    batches: dict[str, int] = {"a": 0, "b": 0}
    lease_tries: dict[str, int] = {"a": 0, "b": 0}

    def count(conn: object, cursor: object, statement: str, *_: object) -> None:
        name = threading.current_thread().name
        if name in batches and "FOR UPDATE SKIP LOCKED" in statement:
            batches[name] += 1
        if name in lease_tries and statement.startswith("UPDATE relay_leases"):
            lease_tries[name] += 1

    event.listen(pg_engine, "before_cursor_execute", count)
    try:
        with relay_thread(pg_engine, "a", broker) as a:
            wait_until(lambda: a.leadership is not None and a.leadership.leads, WAIT_SECONDS, "relay a to lead")
            with relay_thread(pg_engine, "b", broker) as b:
                for n in range(5):
                    write(pg_engine, n)
                wait_until(lambda: unpublished(pg_engine) == 0 and a.totals["published"] == 5, WAIT_SECONDS,
                           lambda: f"the active relay to publish ({a.totals})")
                # Only a standby seen to look for the lease, again and again, proves it stands by.
                tried = lease_tries["b"]
                wait_until(lambda: lease_tries["b"] >= tried + STANDBY_TRIES, WAIT_SECONDS,
                           lambda: f"the standby to try the lease {STANDBY_TRIES} more times ({lease_tries})")
                assert batches["b"] == 0 and b.totals["published"] == 0  # standing by: no batch, no LISTEN
                assert a.totals["published"] == 5
    finally:
        event.remove(pg_engine, "before_cursor_execute", count)


def test_a_standby_takes_over_from_an_active_relay_that_froze(pg_engine: Engine) -> None:
    broker = StubBroker(middleware=[])
    broker.declare_queue("leader")
    frozen = Leadership(pg_engine, lease=LEASE, holder="frozen")
    assert frozen.hold() is True  # and then it stops renewing, as a SIGSTOPped relay would
    with relay_thread(pg_engine, "standby", broker) as standby:
        write(pg_engine, 1)
        # Its count moves just after its commit: wait for both, not for the commit alone.
        wait_until(lambda: unpublished(pg_engine) == 0 and standby.totals["published"] == 1, WAIT_SECONDS,
                   lambda: f"the standby to take over and publish ({standby.totals})")
    with pg_engine.connect() as conn:
        lease = conn.execute(select(relay_leases)).one()
    assert lease.holder is None  # released at its clean stop


def test_a_lease_left_by_a_dead_relay_expires_on_its_own(pg_engine: Engine) -> None:
    assert Leadership(pg_engine, lease=LEASE, holder="dead:1:x").hold()  # and then it was killed
    successor = Leadership(pg_engine, lease=LEASE)
    assert successor.hold() is False
    wait_until(successor.hold, WAIT_SECONDS, "the dead relay's lease to expire", interval=0.1)
