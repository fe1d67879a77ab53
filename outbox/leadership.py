"""One active relay at a time: a lease in the database, renewed while its holder runs.

Every relay woken by every commit, each racing the others for a batch of one, costs a
transaction per relay per commit (the losers' batches are empty). With a lease, one relay
publishes; the others stand by and try the lease once per poll interval. A lease rather than an
advisory lock: a relay that freezes keeps its session (and a lock) alive, but stops renewing,
so a standby takes over once the lease runs out. A frozen holder that wakes finds it lost the
lease before its next batch; a batch it was in the middle of is published again at worst,
which at-least-once delivery allows.

Lease times come from the relays' own clocks (kept in step by NTP, as a payment system's hosts are).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from sqlalchemy import Engine, or_, update
from sqlalchemy.exc import DBAPIError

from infra.database import insert_on_conflict
from models import relay_leases as t
from models.base import utcnow

log = logging.getLogger("outbox.leadership")

LEASE_NAME = "outbox"


class Leadership:
    def __init__(self, engine: Engine, *, lease: timedelta, holder: str | None = None) -> None:
        self.engine = engine
        self.lease = lease
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        #: Until when (monotonic) this relay may act without renewing: two thirds of the lease
        #: after the last renewal, so it renews well before a standby could take over.
        self._trusted_until = 0.0
        self._row_known = False

    @property
    def leads(self) -> bool:
        return time.monotonic() < self._trusted_until

    def hold(self) -> bool:
        """True while this relay holds the lease, taking or renewing it when due (one UPDATE)."""
        if self.leads:
            return True
        started = time.monotonic()
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                if not self._row_known:
                    # The migration writes the row; a schema made another way may lack it.
                    conn.execute(insert_on_conflict(conn, t).values(name=LEASE_NAME).on_conflict_do_nothing())
                    self._row_known = True
                won = conn.execute(
                    update(t)
                    .where(t.c.name == LEASE_NAME,
                           or_(t.c.holder == self.holder, t.c.expires_at.is_(None), t.c.expires_at < now))
                    .values(holder=self.holder, expires_at=now + self.lease)
                ).rowcount == 1
        except DBAPIError as error:
            log.warning("could not take or renew the relay lease (%s); standing by", error.orig or error)
            won = False
        was_leading = self._trusted_until > 0
        self._trusted_until = started + self.lease.total_seconds() * 2 / 3 if won else 0.0
        if won != was_leading:
            log.info("relay %s is now %s", self.holder, "active" if won else "standing by")
        return won

    def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over at its next try."""
        self._trusted_until = 0.0
        try:
            with self.engine.begin() as conn:
                conn.execute(update(t).where(t.c.name == LEASE_NAME, t.c.holder == self.holder)
                             .values(holder=None, expires_at=None))
        except DBAPIError as error:
            log.warning("could not release the relay lease (%s); it expires on its own", error.orig or error)
