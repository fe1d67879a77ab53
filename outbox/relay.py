"""The relay: drains the outbox into the broker, at least once.

`run_once()` handles one batch and says what it did; `run()` loops over it with
wake-ups, backoff, housekeeping and a graceful stop.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from models.base import utcnow
from outbox import store
from outbox.failpoints import failpoint
from outbox.leadership import Leadership
from outbox.publisher import Publisher, PublishError
from outbox.wakeup import Waiter
from settings import Settings

log = logging.getLogger("outbox.relay")

#: Rows purged per statement; small, so the purge never holds long locks.
PURGE_BATCH_ROWS = 1_000
#: Purge statements per housekeeping pass, to bound the time spent away from relaying.
PURGE_BATCHES_PER_PASS = 10
HOUSEKEEPING_INTERVAL_SECONDS = 30.0
SUMMARY_INTERVAL_SECONDS = 60.0
MIN_BACKOFF_SECONDS = 0.1

PUBLISHED = Counter("outbox_published_total", "Outbox messages handed to the broker")
PUBLISH_FAILURES = Counter("outbox_publish_failures_total", "Batches the broker refused")
BATCH_SIZE = Histogram("outbox_batch_size", "Rows per published batch", buckets=(1, 2, 5, 10, 50, 100, 500, 1000))
UNPUBLISHED = Gauge("outbox_unpublished", "Outbox rows not yet published")
OLDEST_AGE = Gauge("outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outbox row")
PURGED = Counter("outbox_purged_total", "Published outbox rows deleted after the retention period")


@dataclass(frozen=True)
class BatchResult:
    published: int = 0
    failed: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RelayConfig:
    # The defaults are the settings' (settings.py); bootstrap.py maps each process's own.
    batch_size: int = Settings.relay_batch_size
    poll_interval_seconds: float = Settings.relay_poll_interval_seconds
    max_backoff_seconds: float = Settings.relay_max_backoff_seconds
    retention: timedelta = timedelta(hours=Settings.relay_retention_hours)
    #: After a wake-up under load, let rows written meanwhile join the batch (fewer, larger batches).
    coalesce_seconds: float = Settings.relay_coalesce_ms / 1000

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.poll_interval_seconds <= 0 or self.max_backoff_seconds <= 0:
            raise ValueError(f"invalid relay configuration: {self}")


class Backoff:
    """Exponential backoff with full jitter, so relays that failed together retry apart."""

    def __init__(self, maximum_seconds: float) -> None:
        self.maximum = maximum_seconds
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.maximum, MIN_BACKOFF_SECONDS * 2 ** min(self.failures, 20))
        return random.uniform(MIN_BACKOFF_SECONDS, max(MIN_BACKOFF_SECONDS, ceiling))

    def reset(self) -> None:
        self.failures = 0


class Relay:
    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        config: RelayConfig | None = None,
        *,
        waiter: Waiter | None = None,
        name: str | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.config = config or RelayConfig()
        self.waiter = waiter
        #: With several relays on one database, only the lease's holder publishes (outbox/leadership.py).
        self.leadership = leadership
        self.name = name or f"relay@{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self.totals = {"published": 0, "failed_batches": 0, "purged": 0}
        self.last_batch = 0

    def run_once(self) -> BatchResult:
        """Publish one batch: claim, publish, mark published, commit.

        A crash after publishing and before the commit leaves the rows unpublished,
        so they are published again: at least once, never lost.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            rows = store.claim_batch(conn, limit=self.config.batch_size, now=now)
            if not rows:
                return BatchResult()
            ids = [row.id for row in rows]
            try:
                self.publisher.publish(rows)
            except PublishError as error:
                store.record_failure(conn, ids, error=str(error))
                PUBLISH_FAILURES.inc()
                return BatchResult(failed=len(rows), error=str(error))
            failpoint("relay.after_publish")
            store.mark_published(conn, ids, now=utcnow())
        PUBLISHED.inc(len(rows))
        BATCH_SIZE.observe(len(rows))
        log.debug("published %d outbox messages", len(rows))
        return BatchResult(published=len(rows))

    def housekeeping(self) -> store.OutboxStats:
        """Purge published rows past retention (small batches) and refresh the gauges."""
        cutoff = utcnow() - self.config.retention
        for _ in range(PURGE_BATCHES_PER_PASS):
            with self.engine.begin() as conn:
                purged = store.purge_published(conn, older_than=cutoff, limit=PURGE_BATCH_ROWS)
            self.totals["purged"] += purged
            PURGED.inc(purged)
            if purged < PURGE_BATCH_ROWS:
                break
        with self.engine.connect() as conn:
            stats = store.stats(conn, now=utcnow())
        UNPUBLISHED.set(stats.unpublished)
        OLDEST_AGE.set(stats.oldest_unpublished_age_seconds or 0)
        return stats

    def stop(self) -> None:
        self.stopping.set()
        if self.waiter is not None:
            self.waiter.interrupt()

    def run(self) -> None:
        """Relay until `stop()`; the batch in hand is finished and committed first."""
        backoff = Backoff(self.config.max_backoff_seconds)
        next_housekeeping = 0.0
        next_summary = time.monotonic() + SUMMARY_INTERVAL_SECONDS
        log.info("%s started (batch %d)", self.name, self.config.batch_size)
        listening = False
        while not self.stopping.is_set():
            if self.leadership is not None and not self.leadership.hold():
                # Standing by: no LISTEN (notifications nobody reads would hold PostgreSQL's queue
                # back), one try of the lease per poll interval.
                if listening and self.waiter is not None:
                    self.waiter.close()
                listening = False
                self.stopping.wait(self.config.poll_interval_seconds)
                continue
            if not listening and self.waiter is not None:
                self.waiter.prepare()  # LISTEN before the batch, so no commit goes unheard
            listening = True
            try:
                result = self.run_once()
            except DBAPIError as error:
                # A dropped or restarted database: the pool hands out a fresh connection
                # next time; nothing was marked published, so nothing is lost.
                result = BatchResult(error=f"database: {error.orig or error}")
            except Exception as error:  # an unexpected fault must not end the relay
                log.exception("unexpected error in a relay batch")
                result = BatchResult(error=f"{type(error).__name__}: {error}")
            self.totals["published"] += result.published
            self.last_batch = result.published
            if result.error:
                self.totals["failed_batches"] += 1
                delay = backoff.next_delay()
                log.warning("relay batch failed (%s); retrying in %.1fs", result.error, delay)
                self.stopping.wait(delay)
                continue
            backoff.reset()
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL_SECONDS
                try:
                    self.housekeeping()
                except Exception:  # purging can wait for the next pass
                    log.exception("relay housekeeping failed")
            if time.monotonic() >= next_summary:
                log.info("%s: %d published in total, %d failed batches, %d purged",
                         self.name, self.totals["published"], self.totals["failed_batches"], self.totals["purged"])
                next_summary = time.monotonic() + SUMMARY_INTERVAL_SECONDS
            if result.published >= self.config.batch_size:
                continue  # a full batch: more is probably waiting
            self._wait()
        if self.leadership is not None:
            self.leadership.release()
        log.info("%s stopped after publishing %d messages", self.name, self.totals["published"])

    def _wait(self) -> None:
        if self.waiter is None:
            self.stopping.wait(self.config.poll_interval_seconds)
            return
        woken = self.waiter.wait(self.config.poll_interval_seconds)
        # Under load (the last batch had company), let the rows written meanwhile join the
        # next batch; an idle system's single row goes at once.
        if woken and self.last_batch > 1 and self.config.coalesce_seconds and not self.stopping.is_set():
            time.sleep(self.config.coalesce_seconds)
