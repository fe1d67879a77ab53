"""A small but real bank API: applies each Idempotency-Key once and replays its answer.

It stands for the external settlement bank the credit step calls. It has fault controls
(latency, a timeout *after* applying, 5xx, down) for tests and demos.
"""
