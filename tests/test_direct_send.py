"""The web sends an exchange's first message itself, straight after its commit; the relay is the backstop.

The accept commits the quote's outbox row due a grace period later and hands the message to
the broker at once, marked so that the quote step marks the row published in its own
transaction. A happy exchange is then no relayed message at all. Whatever goes wrong between
the commit and the consumer (the web dies before sending, the broker refuses, the queue loses
the message, the relay's copy arrives as well), the row is still there: the relay sends it
when its grace runs out, and the claims make a second copy harmless.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from decimal import Decimal

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, select, update

from domain import states as machine
from harness import invariants
from jobs.actors import declare_actors
from jobs.broker import build_broker
from models import exchange_events, outbox_messages
from models.base import utcnow
from outbox import direct, failpoints
from outbox.direct import DirectSender
from outbox.publisher import TAKE_OPTION, BrokerPublisher, PublishError
from outbox.store import OutboxRow
from services.accounts import get_account, open_account
from services.exchanges import ExchangeRequest, create_exchange
from services.workflow import STEPS, Delivery, Workflow
from settings import Settings
from tests.ops_support import handing_off
from tests.support.engine_events import counting
from tests.test_step_graph import WORKER_TRANSACTIONS_PER_EXCHANGE, deliver_outbox
from tests.workflow_support import state_of

GRACE = timedelta(seconds=30)


@pytest.fixture
def wf(wf: Workflow) -> Workflow:
    return handing_off(wf)


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = build_broker(Settings())
    assert isinstance(stub, StubBroker)
    stub.declare_queue("exchanges")
    yield stub
    stub.close()


class RefusingPublisher:
    """A broker that is down: every publish fails."""

    def __init__(self) -> None:
        self.refused = 0

    def publish(self, rows: Sequence[OutboxRow], *, taken_by_consumer: bool = False) -> None:
        self.refused += len(rows)
        raise PublishError("ConnectionError: the broker is down")

    def close(self) -> None:
        pass


def accept_sent(engine: Engine, account: uuid.UUID, sender: DirectSender, amount: str = "100.00",
                key: str | None = None) -> uuid.UUID:
    request = ExchangeRequest(account, "CAD", "USD", Decimal(amount))
    return create_exchange(engine, request, queue="exchanges", sender=sender, idempotency_key=key).exchange_id


def queued(broker: StubBroker) -> list[Message[object]]:
    """The messages waiting in the stub broker's queue, taken off it."""
    found = []
    queue = broker.queues["exchanges"]
    while not queue.empty():
        found.append(Message.decode(queue.get_nowait()))
    return found


def as_delivery(message: Message[object]) -> Delivery:
    """What jobs/actors.py makes of a message (`test_the_real_actor...` runs that code itself)."""
    return Delivery(uuid.UUID(message.kwargs["exchange_id"]), "direct-worker", uuid.UUID(message.message_id),
                    epoch=message.kwargs.get("epoch", 0), inline=bool(message.options.get(TAKE_OPTION)))


def unpublished(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox_messages.c.actor).where(outbox_messages.c.published_at.is_(None)))
                    .scalars())


def grace_passes(engine: Engine) -> None:
    """As if the grace had run out: every waiting row is due now."""
    with engine.begin() as conn:
        conn.execute(update(outbox_messages).where(outbox_messages.c.published_at.is_(None))
                     .values(available_at=utcnow() - timedelta(seconds=1)))


def test_a_sent_exchange_is_no_relayed_message_and_the_quote_step_takes_its_row(
        wf: Workflow, funded_account: uuid.UUID, broker: StubBroker) -> None:
    sender = DirectSender(wf.engine, BrokerPublisher(broker), grace=GRACE)
    exchange_id = accept_sent(wf.engine, funded_account, sender)

    with wf.engine.connect() as conn:
        row = conn.execute(select(outbox_messages)).one()
    assert row.available_at - row.created_at == GRACE  # the relay leaves it to its consumer
    [message] = queued(broker)
    assert message.message_id == str(row.id) and message.options[TAKE_OPTION] is True
    with counting(wf.engine, "commit") as commits:
        STEPS[message.actor_name](wf, as_delivery(message))
    assert commits[0] == WORKER_TRANSACTIONS_PER_EXCHANGE
    assert state_of(wf.engine, exchange_id) == "completed"
    assert unpublished(wf.engine) == []  # the quote's row taken with the debit, the credit's with its result
    assert deliver_outbox(wf) == []  # nothing for the relay, ever
    assert len(wf.bank.all_applied()) == 1
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_the_real_actor_takes_the_row_of_a_message_its_writer_sent(
        wf: Workflow, funded_account: uuid.UUID, broker: StubBroker) -> None:
    declare_actors(broker, Settings(), wf)
    sender = DirectSender(wf.engine, BrokerPublisher(broker), grace=GRACE)
    exchange_id = accept_sent(wf.engine, funded_account, sender)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("exchanges", fail_fast=True)
    finally:
        worker.stop()
    assert state_of(wf.engine, exchange_id) == "completed"
    assert unpublished(wf.engine) == []


def test_a_web_that_dies_between_its_commit_and_its_send_loses_nothing_the_relay_sends_after_the_grace(
        wf: Workflow, funded_account: uuid.UUID, broker: StubBroker) -> None:
    sender = DirectSender(wf.engine, BrokerPublisher(broker), grace=GRACE)
    failpoints.load("accept.before_direct_send=raise")  # a real web is killed there: test_direct_send_processes
    try:
        with pytest.raises(failpoints.InjectedFault):
            accept_sent(wf.engine, funded_account, sender, key="died-before-send")
    finally:
        failpoints.load("")
    assert queued(broker) == []
    # Its retry is answered as a replay of what committed, and sends nothing either.
    exchange_id = accept_sent(wf.engine, funded_account, sender, key="died-before-send")
    assert queued(broker) == []
    assert deliver_outbox(wf, due_or_not=False) == []  # not before the grace
    grace_passes(wf.engine)
    assert deliver_outbox(wf, due_or_not=False) == [machine.QUOTE.actor]
    assert state_of(wf.engine, exchange_id) == "completed"
    assert len(wf.bank.all_applied()) == 1
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_a_refused_send_is_counted_and_leaves_the_message_due_for_the_relay_at_once(
        wf: Workflow, funded_account: uuid.UUID) -> None:
    publisher = RefusingPublisher()
    sender = DirectSender(wf.engine, publisher, grace=GRACE)
    refused_before = direct.SEND_FAILURES._value.get()
    exchange_id = accept_sent(wf.engine, funded_account, sender)
    assert publisher.refused == 1
    assert direct.SEND_FAILURES._value.get() == refused_before + 1
    with wf.engine.connect() as conn:  # on the operators' timeline, not the customer's
        [line] = conn.execute(select(exchange_events).where(exchange_events.c.step == "dispatch")).all()
    assert line.outcome == "error" and "the broker is down" in line.error and "the relay sends it" in line.error
    assert deliver_outbox(wf, due_or_not=False) == [machine.QUOTE.actor]  # due now, not a grace later
    assert state_of(wf.engine, exchange_id) == "completed"
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


@pytest.mark.parametrize("first", ["direct copy", "relay's copy"])
def test_the_direct_copy_and_the_relays_copy_both_delivered_move_money_once(
        wf: Workflow, funded_account: uuid.UUID, broker: StubBroker, first: str) -> None:
    sender = DirectSender(wf.engine, BrokerPublisher(broker), grace=GRACE)
    exchange_id = accept_sent(wf.engine, funded_account, sender)
    [message] = queued(broker)
    grace_passes(wf.engine)  # the consumer was slow: the relay sends its copy too
    if first == "direct copy":
        STEPS[message.actor_name](wf, as_delivery(message))
        assert deliver_outbox(wf) == []  # taken: the relay's copy never leaves
    else:
        assert deliver_outbox(wf, due_or_not=False) == [machine.QUOTE.actor]
        STEPS[message.actor_name](wf, as_delivery(message))  # the late direct copy: a no-op
    assert state_of(wf.engine, exchange_id) == "completed"
    assert len(wf.bank.all_applied()) == 1
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_a_message_the_queue_lost_reaches_the_relay_after_the_grace(
        wf: Workflow, funded_account: uuid.UUID, broker: StubBroker) -> None:
    sender = DirectSender(wf.engine, BrokerPublisher(broker), grace=GRACE)
    exchange_id = accept_sent(wf.engine, funded_account, sender)
    broker.flush_all()  # a broker restarted without its data, or a flushed queue
    grace_passes(wf.engine)
    assert deliver_outbox(wf, due_or_not=False) == [machine.QUOTE.actor]
    assert state_of(wf.engine, exchange_id) == "completed"
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_a_plain_accept_on_postgresql_is_one_statement_with_no_begin_or_commit(
        pg_engine: Engine, broker: StubBroker) -> None:
    account = open_account(pg_engine, "One Statement", {"CAD": Decimal("500.00")})
    sender = DirectSender(pg_engine, BrokerPublisher(broker), grace=GRACE)
    with counting(pg_engine, "before_cursor_execute") as statements, counting(pg_engine, "commit") as commits:
        accept_sent(pg_engine, account, sender, key="one-statement")  # 100.00
    # The hold, the exchange, its first message and its timeline entry: one autocommit statement.
    assert (statements[0], commits[0]) == (1, 0)
    with pg_engine.connect() as conn:
        assert conn.execute(select(outbox_messages.c.actor)).scalars().all() == [machine.QUOTE.actor]
    assert len(queued(broker)) == 1
    # Its retry finds the key used: the one-statement accept holds nothing, and the replay says so.
    with counting(pg_engine, "before_cursor_execute") as statements:
        again = create_exchange(pg_engine, ExchangeRequest(account, "CAD", "USD", Decimal("100.00")),
                                queue="exchanges", sender=sender, idempotency_key="one-statement")
    assert again.replayed and statements[0] > 1
    assert queued(broker) == []
    [cad] = [b for b in get_account(pg_engine, account).balances if b.currency == "CAD"]
    assert (cad.available, cad.held) == (Decimal("400.00"), Decimal("100.00"))  # held once
