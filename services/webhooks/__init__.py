"""Signed webhooks (Standard Webhooks): endpoints, events written with the exchange's transition,
deliveries through the outbox, retried with backoff for more than a day, every attempt kept."""
