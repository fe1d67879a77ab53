"""Sending a message straight after the commit that wrote it, with the relay as the guarantee.

The writer commits its outbox row *delayed* by a grace period, then hands the same message to
the broker at once, marked so that the consumer takes the row (marks it published) in the
step's own transaction. The relay only ever sees rows whose grace ran out untaken: a writer
that died between its commit and the send, a broker that refused it, a queue that lost it.
Delivery stays at least once (the row is committed before anything is sent); the common case
costs no relay batch, no NOTIFY and no second hop through PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta

from prometheus_client import Counter
from sqlalchemy import Engine, bindparam, text, update

from infra.database import is_postgres
from models import outbox_messages
from models.base import utcnow
from outbox.publisher import Publisher, PublishError
from outbox.store import OutboxRow
from outbox.writer import NOTIFY_CHANNEL

log = logging.getLogger("outbox.direct")

SENT = Counter("outbox_direct_sent_total", "Outbox messages their writer sent to the broker itself")
SEND_FAILURES = Counter("outbox_direct_send_failures_total",
                        "Direct sends the broker refused (the relay sends those rows)")

#: Built once: a refused message is due at once, for the relay.
_MAKE_DUE = (update(outbox_messages)
             .where(outbox_messages.c.id == bindparam("d_id"), outbox_messages.c.published_at.is_(None))
             .values(available_at=bindparam("d_now")))


class DirectSender:
    """One per process; thread-safe (a lock around the publisher, which may hold one pipeline)."""

    def __init__(self, engine: Engine, publisher: Publisher, *, grace: timedelta) -> None:
        self.engine = engine
        self.publisher = publisher
        #: How long the relay leaves a directly sent row to its consumer before sending it too.
        self.grace = grace
        self._lock = threading.Lock()

    def send(self, row: OutboxRow) -> str | None:
        """Hand the committed `row` to the broker; the broker's refusal, if it refused (the row is
        then made due, so the relay sends it without waiting out the grace)."""
        try:
            with self._lock:
                self.publisher.publish([row], taken_by_consumer=True)
        except PublishError as error:
            SEND_FAILURES.inc()
            log.warning("direct send of outbox message %s refused (%s): the relay sends it", row.id, error)
            self._make_due(row.id)
            return str(error)
        SENT.inc()
        return None

    def _make_due(self, message_id: uuid.UUID) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(_MAKE_DUE, {"d_id": message_id, "d_now": utcnow()})
                if is_postgres(self.engine):
                    conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        except Exception:  # the row is still there, due when its grace ends: the relay's poll finds it
            log.warning("could not make outbox message %s due now; it is due in %s", message_id, self.grace,
                        exc_info=True)

    def close(self) -> None:
        self.publisher.close()
