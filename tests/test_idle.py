"""An idle system sleeps: a relay with nothing to publish runs a bounded number of statements
per poll interval, whatever else commits on its engine (heartbeats, its own empty batches).

The bound is measured, not guessed: the statements of one empty batch and of one housekeeping
pass, times the poll cycles the relay was seen to run. Counting cycles alone would let a relay
that woke itself pass (thousands of cycles, each within the bound), so every wait is also
checked: none woken, each a poll interval long.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, text

from harness.waiters import WatchedWaiter
from harness.waits import wait_until
from infra.database import is_postgres
from ops.processes import Heartbeat, ProcessRole
from outbox import writer
from outbox.publisher import BrokerPublisher
from outbox.relay import Relay, RelayConfig
from outbox.wakeup import ListenWaiter, PollWaiter, Waiter
from tests.conftest import settings_for
from tests.support.engine_events import counting

POLL_SECONDS = 0.1
INTERVALS = 10
#: Short enough to notice at once whether a commit woke the waiter.
SHORT_WAIT_SECONDS = 0.2
RELAY_THREAD = "idle-relay"
HEARTBEAT_THREAD = f"heartbeat-{ProcessRole.WORKER}"
STATEMENTS = "before_cursor_execute"
#: Bound on waiting for INTERVALS poll cycles (a second, unloaded), so a relay that never waits fails.
CYCLES_WITHIN_SECONDS = 60.0


def waiter_for(engine: Engine) -> Waiter:
    return ListenWaiter(engine) if is_postgres(engine) else PollWaiter(engine)


def test_an_idle_relay_runs_a_bounded_number_of_statements_per_poll_interval(engine: Engine) -> None:
    config = RelayConfig(poll_interval_seconds=POLL_SECONDS)
    probe = Relay(engine, BrokerPublisher(StubBroker(middleware=[])), config)
    with counting(engine, STATEMENTS) as per_batch:
        probe.run_once()
    with counting(engine, STATEMENTS) as per_housekeeping:
        probe.housekeeping()
    assert per_batch[0] >= 1

    waiter = WatchedWaiter(waiter_for(engine))
    relay = Relay(engine, BrokerPublisher(StubBroker(middleware=[])), config, waiter=waiter)
    beat = Heartbeat(engine, ProcessRole.WORKER, interval_seconds=POLL_SECONDS / 4)
    with counting(engine, STATEMENTS, RELAY_THREAD) as counted, counting(engine, "commit", HEARTBEAT_THREAD) as beats:

        def cycled() -> list[tuple[bool, float]] | None:
            """The waits so far, once there are INTERVALS of them, with heartbeats committed meanwhile."""
            waits = list(waiter.ended)
            return waits if len(waits) >= INTERVALS and beats[0] >= INTERVALS else None

        loop = threading.Thread(target=relay.run, name=RELAY_THREAD, daemon=True)
        loop.start()
        beat.start()  # another process role committing on the same engine, four times per interval
        try:
            # Poll cycles, not wall-clock time: a loaded machine only makes the window longer.
            waits = wait_until(cycled, CYCLES_WITHIN_SECONDS,
                               lambda: f"{INTERVALS} poll waits and heartbeats ({len(waiter.ended)}, {beats[0]})")
        finally:
            beat.stop()
            relay.stop()
            loop.join()
            waiter.close()
    # No commit here wrote a message, so no wait may end woken; each must have slept its interval
    # (a lower bound, which a loaded machine cannot break; half of it, for timer granularity).
    woken = sum(1 for was_woken, _ in waits if was_woken)
    assert woken == 0, f"an idle relay was woken in {woken} of {len(waits)} waits"
    short = sorted(seconds for _, seconds in waits if seconds < POLL_SECONDS / 2)
    assert not short, f"{len(short)} of {len(waits)} waits shorter than half the poll interval: {short[:5]}"
    assert relay.totals["failed_batches"] == 0
    # One batch per wait begun (the last one ended by stop()), and one housekeeping pass.
    bound = (waiter.waits + 1) * per_batch[0] + per_housekeeping[0]
    assert 0 < counted[0] <= bound, f"{counted[0]} statements in {waiter.waits} poll cycles (bound {bound})"


def test_the_embedded_waiter_is_woken_by_a_commit_that_wrote_a_message_and_by_no_other(sqlite_engine: Engine) -> None:
    waiter = PollWaiter(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(text("SELECT 1"))  # a commit that wrote no message (the relay's empty batch)
    assert waiter.wait(SHORT_WAIT_SECONDS) is False

    with pytest.raises(RuntimeError), sqlite_engine.begin() as conn:
        writer.enqueue(conn, actor="convert", payload={"n": 1}, queue="idle")
        raise RuntimeError("rolled back: the message was never written")
    with sqlite_engine.begin() as conn:
        conn.execute(text("SELECT 1"))
    assert waiter.wait(SHORT_WAIT_SECONDS) is False

    with sqlite_engine.begin() as conn:
        writer.enqueue(conn, actor="convert", payload={"n": 2}, queue="idle", message_id=uuid.uuid4())
    assert waiter.wait(SHORT_WAIT_SECONDS) is True


@pytest.mark.postgres
def test_a_message_due_later_wakes_no_relay_and_a_message_due_now_does(pg_engine: Engine) -> None:
    waiter = ListenWaiter(settings_for(pg_engine).database_direct_url or pg_engine)  # LISTEN direct
    waiter.prepare()
    try:
        with pg_engine.begin() as conn:  # a handed-off step's message: due a lease later
            writer.enqueue(conn, actor="convert", payload={"n": 1}, queue="idle", delay=timedelta(seconds=30))
        assert waiter.wait(SHORT_WAIT_SECONDS) is False
        with pg_engine.begin() as conn:
            writer.enqueue(conn, actor="convert", payload={"n": 2}, queue="idle")
        assert waiter.wait(SHORT_WAIT_SECONDS * 10) is True
    finally:
        waiter.close()
