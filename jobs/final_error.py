"""Keep a dead letter's final error with it.

Dramatiq's Redis broker dead-letters a message as it was last *stored*, so the error of the
attempt that exhausted its retries (the traceback and the retry count the Retries middleware
has just set on it) is lost, and a message with no retries carries no error at all. After the
nack, this writes the message as it is now over its dead-letter copy.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name

log = logging.getLogger(__name__)


class KeepFinalError(dramatiq.Middleware):
    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        redis_id = message.options.get("redis_message_id")
        if not isinstance(broker, RedisBroker) or not redis_id:
            return  # RabbitMQ dead-letters the body the worker nacked, options included
        key = f"{broker.namespace}:{q_name(message.queue_name)}.XQ.msgs"
        try:
            if broker.client.hexists(key, redis_id):
                broker.client.hset(key, redis_id, message.encode())
        except Exception:  # the letter is dead-lettered either way; only its error text is missing
            log.warning("could not keep the final error of dead letter %s", message.message_id, exc_info=True)
