"""The transactional outbox: written inside business transactions, drained by the relay."""
