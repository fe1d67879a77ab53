"""Publishers that misbehave on purpose, wrapped around the relay's real one."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence

from outbox.publisher import Publisher
from outbox.store import OutboxRow


class TwicePublisher:
    """Publishes every batch twice: each message reaches the broker twice with one message id."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner
        self.published: Counter[uuid.UUID] = Counter()

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        self.inner.publish(rows)
        self.inner.publish(rows)
        self.published.update(row.id for row in rows for _ in range(2))

    def close(self) -> None:
        self.inner.close()
