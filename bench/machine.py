"""One line naming the machine a benchmark ran on, written beside its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine()
    )
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()}, Python {platform.python_version()}"


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and all its descendants so far (/proc, in clock ticks): a
    server's own worker processes (our JSON parser, Triton's backend stubs) count as the server."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    family, joining = {pid}, {pid}
    while joining:
        joining = {p for p, parent in parents.items() if parent in joining}
        family |= joining
    return sum(ticks.get(p, 0) for p in family) / os.sysconf("SC_CLK_TCK")
