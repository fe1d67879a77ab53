"""`--profile`: py-spy on every Python process of the topology, summarised by role and by frame."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.processes import BIN
from harness.provision import Provisioned, cpu_meter

#: Roles whose Python processes `--profile` samples with py-spy.
PROFILED_ROLES = ("web", "relay", "worker", "reconciler")
#: Frames listed per role in the profile summary.
PROFILE_TOP = 14

class Profiler:
    """py-spy on every Python process of the profiled roles, from `start()` to `stop()` (SIGINT)."""

    def __init__(self, topo: Provisioned, out_dir: Path, rate_hz: int = 100) -> None:
        self.topo = topo
        self.out_dir = out_dir
        self.rate_hz = rate_hz
        self.samplers: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def start(self) -> None:
        py_spy = BIN / "py-spy"
        if not py_spy.exists():
            raise HarnessError(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid, role in python_processes(self.topo, PROFILED_ROLES).items():
            path = self.out_dir / f"{role}-{pid}.txt"
            command = (str(py_spy), "record", "--pid", str(pid), "--rate", str(self.rate_hz), "--format", "raw",
                       "--output", str(path), "--nonblocking", "--gil")
            self.samplers.append((role, path, subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                                               stderr=subprocess.DEVNULL)))
        self.topo.commands.append(f"{BIN / 'py-spy'} record --pid <each Python process> --rate {self.rate_hz} "
                                  "--format raw --nonblocking --gil   (flat-out phase)")

    def stop(self) -> None:
        for _, _, process in self.samplers:
            process.send_signal(signal.SIGINT)
        for _, _, process in self.samplers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    def summary(self, exchanges_count: int) -> str:
        by_role: dict[str, Counter[str]] = {}
        for role, path, _ in self.samplers:
            stacks = by_role.setdefault(role, Counter())
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    stack, _, count = line.rpartition(" ")
                    if stack and count.isdigit():
                        stacks[stack] += int(count)
        lines = [f"  py-spy profile of the flat-out phase ({self.rate_hz} Hz, only threads holding the GIL, i.e. "
                 f"Python's own CPU; raw stacks in {self.out_dir}):"]
        for role, stacks in by_role.items():
            total = sum(stacks.values())
            if not total:
                continue
            lines.append(f"    {role}: {total} samples = {total * 1000 / self.rate_hz / exchanges_count:.2f} "
                         "ms of GIL-holding Python per exchange")
            lines.append("      self time by package: " + ", ".join(
                f"{pkg} {n * 100 / total:.0f}%" for pkg, n in _self_by(stacks, _package).most_common(10)))
            lines.append("      top self frames: " + "; ".join(
                f"{frame} {n * 100 / total:.0f}%" for frame, n in _self_by(stacks, _short).most_common(PROFILE_TOP)))
            inclusive: Counter[str] = Counter()
            for stack, n in stacks.items():
                for frame in {_short(f) for f in stack.split(";") if _ours(f)}:
                    inclusive[frame] += n
            lines.append("      our code, inclusive: " + "; ".join(
                f"{frame} {n * 100 / total:.0f}%" for frame, n in inclusive.most_common(PROFILE_TOP)))
        return "\n".join(lines)


def python_processes(topo: Provisioned, roles: Sequence[str]) -> dict[int, str]:
    """pid -> role of every Python process in the trees of the services of `roles`."""
    found = {}
    for pid, (role, _) in cpu_meter(topo).sample().items():
        if role in roles:
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if "python" in Path(exe).name:
                found[pid] = role
    return found


#: Where our code lives: top-level folders and modules of the project.
_OUR_DIRS = ("services", "outbox", "jobs", "web", "domain", "models", "bank")
_OUR_FILES = ("app.py", "database.py", "observability.py", "settings.py", "errors.py")


def _file(frame: str) -> str:
    """py-spy's frame is `function (path/inside/sys/path.py:line)`."""
    return frame[frame.rfind("(") + 1:].rstrip(")").rsplit(":", 1)[0]


def _ours(frame: str) -> bool:
    path = _file(frame)
    return path.split("/", 1)[0] in _OUR_DIRS or path in _OUR_FILES


def _package(frame: str) -> str:
    path = _file(frame)
    if _ours(frame):
        return "ours: " + path.split("/", 1)[0].removesuffix(".py")
    return path.split("/", 1)[0].removesuffix(".py")


def _short(frame: str) -> str:
    name = frame[:frame.rfind(" (")] if " (" in frame else frame
    return f"{name} ({_file(frame).removesuffix('.py')})"


def _self_by(stacks: Counter[str], key: Any) -> Counter[str]:
    result: Counter[str] = Counter()
    for stack, n in stacks.items():
        result[key(stack.rsplit(";", 1)[-1])] += n
    return result
