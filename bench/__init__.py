"""Benchmarks run by hand or from the Makefile (`make bench-relay`); not part of the test suite."""
