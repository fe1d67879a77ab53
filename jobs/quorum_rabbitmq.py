"""Dramatiq's RabbitMQ broker with quorum queues: replicated (Raft) over the cluster's nodes.

Dramatiq declares classic queues; a classic queue lives on one node, and its messages die with
that node's disk. A quorum queue keeps each message on a majority of the nodes and confirms a
publish only once that majority has it, so with publisher confirms (which the relay waits for
before it marks a row published) the loss of a minority of nodes loses no confirmed message.
The queue, its delay queue and its dead-letter queue are all quorum queues. Quorum queues have
no priorities (`max_priority` is refused) and dead-letter a message redelivered more than
`x-delivery-limit` times (RabbitMQ's default; our retries enqueue a new message, which does
not count).
"""

from __future__ import annotations

from typing import Any

from dramatiq.brokers.rabbitmq import RabbitmqBroker

from errors import ConfigError

QUORUM = {"x-queue-type": "quorum"}


class QuorumRabbitmqBroker(RabbitmqBroker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("max_priority"):
            raise ConfigError("quorum queues have no priorities: BROKER_QUEUE_TYPE=classic for max_priority")
        super().__init__(*args, **kwargs)

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return {**super()._build_queue_arguments(queue_name), **QUORUM}

    def _declare_xq_queue(self, queue_name: str) -> Any:
        # Dramatiq's dead-letter queue, with its message TTL, as a quorum queue too.
        from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
        from dramatiq.common import xq_name

        return self.channel.queue_declare(queue=xq_name(queue_name), durable=True,
                                          arguments={"x-message-ttl": DEAD_MESSAGE_TTL, **QUORUM})
