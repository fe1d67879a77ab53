"""Fault controls of the bank, set over HTTP by tests and demos."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields


@dataclass
class Faults:
    #: Added to every transfer call.
    latency_ms: int = 0
    #: Share of calls that are applied and then answered too late (the client times out).
    timeout_after_apply_rate: float = 0.0
    #: Share of calls answered 503 before anything is applied.
    error_rate: float = 0.0
    #: Every call answered 503, nothing applied.
    down: bool = False
    #: The next N calls time out after applying / fail with 503 (deterministic tests).
    timeout_after_apply_next: int = 0
    error_next: int = 0
    #: How long a "timeout after apply" answer is held back.
    stall_ms: int = 10_000
    #: Calls are carried out, then answered 200 with a body no client understands (every
    #: call / the next N): a bank-side change of its API, or a proxy's page.
    garbled: bool = False
    garbled_next: int = 0


class FaultControl:
    def __init__(self, seed: int | None = None) -> None:
        self._faults = Faults()
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def update(self, changes: dict[str, object]) -> Faults:
        known = {f.name: f.type for f in fields(Faults)}
        with self._lock:
            for name, value in changes.items():
                if name not in known:
                    raise ValueError(f"unknown fault {name!r}")
                current = getattr(self._faults, name)
                setattr(self._faults, name, type(current)(value))
            return Faults(**asdict(self._faults))

    def reset(self) -> Faults:
        with self._lock:
            self._faults = Faults()
            return Faults()

    def snapshot(self) -> Faults:
        with self._lock:
            return Faults(**asdict(self._faults))

    def garble(self) -> bool:
        """Whether this call's answer is garbled (after it was carried out)."""
        with self._lock:
            if self._faults.garbled_next > 0:
                self._faults.garbled_next -= 1
                return True
            return self._faults.garbled

    def draw(self) -> tuple[bool, bool]:
        """Decide this call's fate: (fail before applying, stall after applying)."""
        with self._lock:
            f = self._faults
            if f.down:
                return True, False
            if f.error_next > 0:
                f.error_next -= 1
                return True, False
            if f.timeout_after_apply_next > 0:
                f.timeout_after_apply_next -= 1
                return False, True
            fail = self._random.random() < f.error_rate
            stall = not fail and self._random.random() < f.timeout_after_apply_rate
            return fail, stall
