"""Dramatiq: the broker, the actors and the worker entry point."""
