"""The harness's own errors: it could not set the system up, or gave up waiting.

Neither is an invariant failure. Both are AssertionErrors as well, so pytest reports them
as the failing test's own failure, and a benchmark can still catch `HarnessError`.
"""

from __future__ import annotations


class HarnessError(RuntimeError):
    """The harness could not set the system up or drive it (not an invariant failure)."""


class WaitTimeout(HarnessError, AssertionError):
    """A bounded wait ran out before its condition held."""


class ProcessExited(HarnessError, AssertionError):
    """A process the harness was waiting on exited instead."""
