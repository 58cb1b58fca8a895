"""Stale upload temporaries swept: ``.part`` files a dead upload left beside its target.

An upload writes ``.<name>.hpcgate-<12 hex>.part`` and renames it onto the
target when complete (:class:`~hpcgate.server.filesystem.atomic.AtomicWrite`);
a server killed meanwhile leaves the temporary file forever. This module
removes such files once they are older than ``part_max_age``.

Which identity sweeps: each user, over their own connection. The files
belong to the user whose upload made them, in directories that may be
writable by that user alone; the service account can neither delete them
nor should it hold write access to every user's tree. So for each user with
an open connection (their pool in use: no login is made just to sweep), a
sweep runs as that user when the user is first seen after start-up, and
again every ``part_sweep_interval`` while connected. It deletes only regular
files owned by the user, named by hpcgate's own pattern, unchanged for the
age bound (an upload in progress writes, so its mtime stays fresh).

Where: under each configured filesystem, the user's own directory
(``<root>/<user>``, the usual layout of homes and scratch) if it exists,
else the filesystem root; ``find -xdev`` without following links, so a
sweep stays on that filesystem, and unreadable directories are pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from hpcgate.server.errors import ServiceError
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.ssh import SSHPool, deadline_after

log = logging.getLogger(__name__)

# How often the sweeper looks for users whose sweep is due (seconds).
TICK = 30.0
# Time limit of one user's sweep (seconds).
SWEEP_TIME_LIMIT = 300.0
# The temporary names of atomic.temp_name: ".<stem>.hpcgate-<12 hex>.part".
PART_GLOB = ".*.hpcgate-" + "[0-9a-f]" * 12 + ".part"

# $1: age bound in minutes; $2: the name pattern; the rest: filesystem roots.
_SWEEP = """
age=$1 pattern=$2 me=$(id -un) uid=$(id -u)
shift 2
for root do
    top=$root
    [ -d "$root/$me" ] && top=$root/$me
    find "$top" -xdev \\( -type d ! -readable -prune \\) -o \\
        -type f -user "$uid" -name "$pattern" -mmin "+$age" -print0 \\
        -exec rm -f -- {} + 2>/dev/null
done
exit 0
"""


def sweep_argv(confine: Confine, max_age: float) -> list[str]:
    """The sweep command of one user, over the system's filesystems."""
    minutes = max(1, int(max_age // 60))
    return ["sh", "-c", _SWEEP, "sweep", str(minutes), PART_GLOB, *confine.configured]


class PartSweeper:
    """Sweeps each connected user's stale ``.part`` files on one system (see the module doc)."""

    def __init__(self, pool: SSHPool, confine: Confine, max_age: float, interval: float) -> None:
        self._pool = pool
        self._confine = confine
        self._max_age = max_age
        self._interval = interval
        # When each user was last swept (time.monotonic()); absent: not yet.
        self._swept: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def due(self) -> list[str]:
        """Users with an open connection whose sweep is due."""
        now = time.monotonic()
        return sorted(
            user
            for user, stats in self._pool.stats().users.items()
            if stats.connections > 0
            and (user not in self._swept or now - self._swept[user] >= self._interval)
        )

    async def sweep(self, user: str) -> list[str]:
        """Sweep ``user``'s stale temporaries now; the paths removed."""
        self._swept[user] = time.monotonic()
        result = await self._pool.run(
            user,
            sweep_argv(self._confine, self._max_age),
            deadline=deadline_after(SWEEP_TIME_LIMIT),
        )
        removed = [p.decode(errors="replace") for p in result.stdout.split(b"\0") if p]
        if removed:
            log.info("removed %d stale upload temporaries of %s", len(removed), user)
        return removed

    async def _loop(self) -> None:
        while True:
            for user in self.due():
                try:
                    await self.sweep(user)
                except ServiceError as error:  # the next interval tries again
                    log.info("sweep of %s's upload temporaries failed: %s", user, error.message)
            await asyncio.sleep(min(TICK, self._interval))
