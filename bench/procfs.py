"""What /proc says about the server process and about the machine.

CPU time and RSS are read from /proc rather than asked of the server, so
that measuring costs the server nothing and needs no endpoint.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import ROOT

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` so far, to the nanosecond: its threads' ``schedstat`` run times.

    ``/proc/<pid>/stat`` counts in 10 ms ticks, too coarse for a listing of
    1,000 entries (a tick is 10 us per entry). A thread that has exited
    takes its time with it; the services' threads live as long as they do.
    Without schedstat (a kernel built without it): utime + stime.
    """
    try:
        return (
            sum(
                int(Path(task, "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        return _stat_seconds(pid)


def _stat_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (``/proc/<pid>/stat`` utime+stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces: split after its ")".
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (never true for 0 or negative pids)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """CPU seconds sets of processes used between :meth:`start` and :meth:`stop`.

    ``pids``: by name, one process or several (a fleet's replicas: their sum).
    """

    def __init__(self, pids: Mapping[str, int | Sequence[int]]) -> None:
        self._pids = {name: [p] if isinstance(p, int) else list(p) for name, p in pids.items()}
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(map(cpu_seconds, pids)) for name, pids in self._pids.items()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        return {name: seconds - self._start[name] for name, seconds in self._now().items()}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _command_output(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    except OSError:
        return ""
    return (result.stdout or result.stderr).strip()


def machine() -> dict[str, Any]:
    """The machine and software the figures were taken on (for the results file)."""
    packages = ("grpcio", "protobuf", "asyncssh", "httpx", "uvicorn", "starlette")
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = _command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(_command_output(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _mem_total(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": _command_output(["ssh", "-V"]),
        "packages": versions,
        "git_commit": commit + ("-dirty" if dirty else ""),
    }
