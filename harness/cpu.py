"""CPU seconds by role, read from /proc (Linux): utime + stime of each process.

A meter is given a function that names the role of each process worth counting (a
service's process tree, our PostgreSQL backends, ...); `spent()` turns two samples into
CPU seconds per role. Processes that exited between the samples are not counted: their
CPU is gone from /proc with them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: pid -> (role, CPU seconds so far).
Sample = dict[int, tuple[str, float]]


@dataclass(frozen=True)
class ProcessInfo:
    parent: int
    name: str
    cpu_seconds: float


#: pid -> what /proc says of it.
ProcessTable = dict[int, ProcessInfo]


def process_table() -> ProcessTable:
    """Every process's parent pid, command name and CPU seconds (utime + stime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        # The command name (in parentheses) may hold spaces: the fields follow its last ")".
        name_end = stat.rfind(")")
        fields = stat[name_end + 2:].split()
        table[int(entry.name)] = ProcessInfo(int(fields[1]), stat[stat.find("(") + 1:name_end],
                                             (int(fields[11]) + int(fields[12])) / ticks)  # stat fields 14, 15
    return table


def cmdline(pid: int) -> str:
    """The process's command line (PostgreSQL backends show their database and client there)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree(table: ProcessTable, roots: Iterable[int]) -> set[int]:
    """The pids of `roots` and every process descended from them."""
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.parent, []).append(pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def postgres_backends(table: ProcessTable, database: str | None = None) -> dict[int, str]:
    """pid -> command line of the local PostgreSQL processes (of `database`'s backends only, if given)."""
    marker = None if database is None else f" {database} "
    found = {}
    for pid, info in table.items():
        if info.name == "postgres":
            line = cmdline(pid)
            if marker is None or marker in line:
                found[pid] = line
    return found


class CpuMeter:
    """Samples the CPU of the processes that `roles` names, by role."""

    def __init__(self, roles: Callable[[ProcessTable], dict[int, str]]) -> None:
        self.roles = roles

    def sample(self) -> Sample:
        table = process_table()
        return {pid: (role, table[pid].cpu_seconds) for pid, role in self.roles(table).items() if pid in table}

    @staticmethod
    def spent(before: Sample, after: Sample) -> Counter[str]:
        """CPU seconds by role between two samples (processes gone by `after` are not counted)."""
        total: Counter[str] = Counter()
        for pid, (role, cpu) in after.items():
            total[role] += cpu - before.get(pid, (role, 0.0))[1]
        return total
