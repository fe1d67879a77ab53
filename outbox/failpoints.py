"""Named places where a test can inject a fault into a real process (kill -9, raise, pause).

`FX_FAILPOINTS="relay.after_publish=kill"` makes the relay SIGKILL itself right after
publishing a batch and before committing it: the crash the outbox must survive. Unset
in production, a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time

from errors import OutboxError

#: Actions by failpoint name, read once per process from the environment.
_ACTIVE: dict[str, str] = {}


class InjectedFault(OutboxError, RuntimeError):
    """Raised by a failpoint whose action is `raise`."""


def load(spec: str | None = None) -> None:
    spec = os.environ.get("FX_FAILPOINTS", "") if spec is None else spec
    _ACTIVE.clear()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        _ACTIVE[name] = action or "raise"


def failpoint(name: str) -> None:
    action = _ACTIVE.get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif action.startswith("sleep:"):
        time.sleep(float(action.removeprefix("sleep:")))
    else:
        raise InjectedFault(f"failpoint {name}")


load()
