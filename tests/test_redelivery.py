"""Messages a killed worker held come back to another worker, through the broker alone.

A worker fetches messages before it runs them (Dramatiq prefetches two per thread) and
acknowledges each when its step returns. Killed with kill -9, it acknowledges nothing:
the message it was running and the ones waiting in its memory must reach another worker,
and every exchange still completes, debited and credited once.

Real PostgreSQL, a redis-server of the test's own, the bank and Dramatiq workers as
subprocesses. Durations are never asserted; every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from harness import invariants
from harness.frozen import process_state
from harness.outcome import exchange_states, postings_by_exchange, timeline, wait_settled
from harness.queues import held_messages
from harness.waits import wait_until
from harness.worker_logs import worker_process_pid
from services.accounts import open_account
from tests.support.zombies import Scene, exchange_row, start_exchange

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

#: The broker settings this test relies on, passed to every worker (they are also the
#: project's test settings, FAST_WORKFLOW_ENV). Dramatiq's Redis broker gives a dead
#: worker's unacknowledged messages back only when its heartbeat is older than
#: BROKER_HEARTBEAT_TIMEOUT_MS, and only during a maintenance pass, which runs on a command
#: on the same queue with a chance of BROKER_MAINTENANCE_CHANCE per million. 5000 and
#: 1000000 (every command of the surviving worker) bring them back in about 5 s here; with
#: Dramatiq's defaults (60 s, 1,000 per million) it took 6.5 to 28 minutes
#: (shared/README.md), far past this test's deadline.
REDELIVERY_ENV = {"BROKER_HEARTBEAT_TIMEOUT_MS": "5000", "BROKER_MAINTENANCE_CHANCE": "1000000"}
#: The holder pauses this long in its first credit, after the bank paid: it is killed long before.
HOLD_FAILPOINT = "step.credit.after_bank=sleep:30"
EXCHANGES = 4
#: Deadline for the exchanges to settle; generous, so only a lost message fails it.
SETTLE_TIMEOUT_SECONDS = 60.0
#: Deadline for the holder to reach its pause with a second message prefetched.
HOLD_TIMEOUT_SECONDS = 60.0


def test_messages_held_by_a_worker_killed_with_sigkill_are_processed_by_another_worker(scene: Scene) -> None:
    topo = scene.topology
    bank = topo.start_bank()
    # One thread: the holder runs one message and keeps up to one more prefetched in memory.
    holder = topo.start_worker("holder", threads=1, failpoints=HOLD_FAILPOINT, verbose=True, extra=REDELIVERY_ENV)
    holder_pid = worker_process_pid(holder)
    topo.start_relay_thread()
    account = open_account(topo.engine, "Redelivery", {"CAD": Decimal("1000.00")})
    ids = [start_exchange(topo, account) for _ in range(EXCHANGES)]

    # The holder pauses in a credit the bank has paid, holding that message and a prefetched one.
    def holding() -> tuple[str, set[str]] | None:
        held = held_messages(topo.broker_url, topo.queue)
        if len(held) == 1 and bank.all_applied():
            [(worker_id, message_ids)] = held.items()
            return (worker_id, message_ids) if len(message_ids) >= 2 else None
        return None

    holder_id, held = wait_until(
        holding, HOLD_TIMEOUT_SECONDS,
        what=lambda: f"the holder to hold 2 messages: {held_messages(topo.broker_url, topo.queue)}\n{scene.describe()}")
    print(f"the holder {holder_id} (pid {holder_pid}) holds {sorted(held)}")
    [paid] = [uuid.UUID(t.reference) for t in bank.all_applied()]
    assert f":{holder_pid}:" in (exchange_row(topo.engine, paid).claimed_by or "")

    # Another worker consumes the queue (Dramatiq's maintenance runs on its commands there);
    # while the holder lives, what it holds stays its own.
    rescuer = topo.start_worker("rescuer", verbose=True, extra=REDELIVERY_ENV)
    rescuer_pid = worker_process_pid(rescuer)
    assert held_messages(topo.broker_url, topo.queue).get(holder_id) == held

    os.kill(holder_pid, signal.SIGKILL)
    wait_until(lambda: process_state(holder_pid) in {None, "Z"}, 10, what=f"pid {holder_pid} to die")

    assert wait_settled(topo, SETTLE_TIMEOUT_SECONDS) == Counter({"completed": EXCHANGES})
    assert holder_id not in held_messages(topo.broker_url, topo.queue)
    # Each message the holder held was run to its end by the rescuer. The one it was running had
    # committed its quote and debit before the holder paused in the credit it ran at once after
    # them (that credit's own message came from the outbox a lease later); nothing else by anyone else.
    ran: dict[str, set[tuple[str, str]]] = {}
    for event in timeline(topo.engine):
        # (The accept entry names the quote message it wrote; no worker ran it.)
        if event.message_id is not None and str(event.message_id) in held and event.step != "accept":
            ran.setdefault(str(event.message_id), set()).add((event.step, event.worker or ""))
    assert set(ran) == held, f"held {held}, the timeline shows {ran}"
    strangers = {m: {(step, w) for step, w in steps if f":{rescuer_pid}:" not in w} for m, steps in ran.items()}
    strangers = {m: steps for m, steps in strangers.items() if steps}
    assert len(strangers) <= 1, strangers
    for steps in strangers.values():
        assert {step for step, _ in steps} == {"quote", "debit"}, steps
        assert all(f":{holder_pid}:" in w for _, w in steps), steps
    # The interrupted credit was taken over and paid by the bank's replay, once.
    [rescued] = [e for e in timeline(topo.engine, paid) if e.step == "credit" and e.outcome == "rescued"]
    assert rescued.worker and f":{rescuer_pid}:" in rescued.worker, rescued

    assert exchange_states(topo.engine) == Counter({"completed": EXCHANGES})
    postings = postings_by_exchange(topo.engine)
    assert {i: postings.get(i) for i in ids} == {i: Counter({"debit": 1, "credit": 1}) for i in ids}
    assert Counter(t.reference for t in bank.all_applied()) == Counter({str(i): 1 for i in ids})
    report = invariants.check(topo.engine, bank=bank, settled=True)
    assert report.ok, f"{report}\n{scene.describe()}"
