"""Faults injected into the shared loopback cluster, always undone.

The cluster serves every test at once, so each fault is short and restored
in a ``finally``: a paused daemon gets SIGCONT, a stopped one is started
again by ``cluster.py start`` (idempotent: it starts only what is down),
and the context waits until the cluster reports every part running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

from cluster_fixture import CLUSTER_SCRIPT

T = TypeVar("T")


def _cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, check=False
    )


def cluster_pid(part: str) -> int:
    """The pid of one of the cluster's daemons (``sshd``, ``slurmctld``, ``mariadbd`` ...)."""
    return int(json.loads(_cluster("info").stdout)["pids"][part])


def running(part: str) -> bool:
    """Whether the cluster reports ``part`` running (a paused daemon counts as running)."""
    return bool(json.loads(_cluster("info").stdout)["running"][part])


def cluster_whole() -> bool:
    """Whether ``cluster.py status`` reports every part running."""
    return _cluster("status").returncode == 0


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait until ``check()`` holds, polling; fail naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.1f} s: {what}")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block (the daemon hangs: connections open, no answers)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _gone(pids: list[int], within: float) -> None:
    deadline = time.monotonic() + within
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def _with_children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [pid, *(int(child) for child in found.stdout.split())]


@contextlib.contextmanager
def stopped(*parts: str) -> Iterator[None]:
    """SIGTERM the cluster's ``parts`` for the block, then start them again.

    sshd goes with its sessions (each one a child process): every connection
    to it drops, as when the daemon really goes away.
    """
    pids = [
        pid
        for part in parts
        for pid in (_with_children(cluster_pid(part)) if part == "sshd" else [cluster_pid(part)])
    ]
    try:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        _gone(pids, 30)
        yield
    finally:
        _restart()


def _restart(attempts: int = 3) -> None:
    """``cluster.py start`` until the cluster is whole (another session may start it too)."""
    for _ in range(attempts):
        started = _cluster("start")
        if started.returncode == 0 and cluster_whole():
            return
        time.sleep(2)
    raise AssertionError(f"the cluster did not come back: {started.stderr[-2000:]}")


@contextlib.asynccontextmanager
async def off_loop(fault: contextlib.AbstractContextManager[None]) -> AsyncIterator[None]:
    """Enter and leave a blocking fault in a thread, keeping the event loop running.

    Stopping a daemon waits for it to exit and starting it again runs
    ``cluster.py`` (seconds, for slurmctld); done on the loop, that stalls
    the in-process service too, and every probe in flight times out, which
    reports healthy parts down.
    """
    await asyncio.to_thread(fault.__enter__)
    try:
        yield
    except BaseException as error:
        if not await asyncio.to_thread(fault.__exit__, type(error), error, error.__traceback__):
            raise
    else:
        await asyncio.to_thread(fault.__exit__, None, None, None)


async def while_stopped(part: str, call: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    """``await call()`` while ``part`` is stopped.

    Other sessions' ``cluster.py start`` restarts whatever is down, so a call
    that finds ``part`` back up afterwards did not see the fault: it is
    repeated with a fresh stop.
    """
    for _ in range(attempts):
        async with off_loop(stopped(part)):
            result = await call()
            if not await asyncio.to_thread(running, part):
                return result
    raise AssertionError(f"{part} was restarted by someone else during every attempt")
