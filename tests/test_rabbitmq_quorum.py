"""RabbitMQ with quorum queues (jobs/quorum_rabbitmq.py), on the shared RabbitMQ.

Our broker setup declares each queue, its delay queue and its dead-letter queue as quorum
queues (replicated over the cluster's nodes; a one-node server still runs them). The proof
that they are: RabbitMQ refuses to redeclare any of them as classic. Then messages go through
them: a delayed one, and an exchange from the web's direct send to its receipt.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, xq_name

from harness import invariants
from harness.waits import wait_until
from jobs.actors import declare_actors
from jobs.broker import build_broker
from jobs.quorum_rabbitmq import QUORUM, QuorumRabbitmqBroker
from outbox.direct import DirectSender
from outbox.publisher import BrokerPublisher
from services.exchanges import ExchangeRequest, create_exchange
from services.workflow import Workflow
from settings import Settings
from tests.conftest import RABBITMQ_URL, unavailable
from tests.ops_support import handing_off
from tests.support.outbox_rows import unique_queue
from tests.workflow_support import state_of

pytestmark = [pytest.mark.rabbitmq]


@pytest.fixture
def queue() -> str:
    return unique_queue("fx-quorum")


@pytest.fixture
def quorum_broker(queue: str) -> Iterator[dramatiq.Broker]:
    broker = build_broker(Settings(broker_url=RABBITMQ_URL, queue_name=queue))
    assert isinstance(broker, QuorumRabbitmqBroker)
    try:
        broker.declare_queue(queue, ensure=True)
    except Exception as error:
        broker.close()
        unavailable("RabbitMQ", error)
    yield broker
    for name in (queue, dq_name(queue), xq_name(queue)):
        broker.channel.queue_delete(name)
    broker.close()


def test_the_queue_its_delay_queue_and_its_dead_letters_are_quorum_queues(
        quorum_broker: dramatiq.Broker, queue: str) -> None:
    declared = {name: quorum_broker._build_queue_arguments(queue) for name in (queue, dq_name(queue))}
    declared[xq_name(queue)] = {"x-message-ttl": DEAD_MESSAGE_TTL, **QUORUM}
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        for name, arguments in declared.items():
            assert arguments["x-queue-type"] == "quorum"
            connection.channel().queue_declare(queue=name, durable=True, arguments=arguments)  # the same: fine
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:  # only the type differs
                connection.channel().queue_declare(queue=name, durable=True,
                                                   arguments={**arguments, "x-queue-type": "classic"})
            assert refused.value.reply_code == 406 and "x-queue-type" in refused.value.reply_text
    finally:
        connection.close()


def test_classic_queues_stay_available_by_setting() -> None:
    broker = build_broker(Settings(broker_url=RABBITMQ_URL, broker_queue_type="classic"))
    assert not isinstance(broker, QuorumRabbitmqBroker)
    broker.close()


def test_a_delayed_message_and_an_exchange_go_through_quorum_queues(
        wf: Workflow, funded_account: uuid.UUID, quorum_broker: dramatiq.Broker, queue: str) -> None:
    wf = handing_off(wf)
    wf = dataclasses.replace(wf, config=dataclasses.replace(wf.config, queue=queue))
    settings = Settings(queue_name=queue)
    declare_actors(quorum_broker, settings, wf)
    pinged = threading.Event()
    ping = dramatiq.actor(lambda: pinged.set(), actor_name=f"ping_{queue}", queue_name=queue, broker=quorum_broker)
    worker = dramatiq.Worker(quorum_broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        ping.send_with_options(delay=300)  # through the delay queue, then back to the queue
        sender = DirectSender(wf.engine, BrokerPublisher(quorum_broker), grace=timedelta(seconds=30))
        accepted = create_exchange(wf.engine, ExchangeRequest(funded_account, "CAD", "USD", Decimal("40.00")),
                                   queue=queue, sender=sender)
        wait_until(lambda: state_of(wf.engine, accepted.exchange_id) == "completed", 30,
                   what="the exchange to complete through RabbitMQ")
        assert pinged.wait(30)
    finally:
        worker.stop()
    assert len(wf.bank.all_applied()) == 1
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok
