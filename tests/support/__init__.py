"""Helpers shared by tests that run real processes: relays, private servers, outbox rows."""
