"""How domain functions reach the cluster: one caller on one system.

A :class:`Remote` runs commands and confined shell steps as the caller and
hands out the caller's SFTP client, every request bounded by the command
timeout and the call's deadline, and failures mapped to ServiceErrors in
the cluster's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import checked, sftp_error
from hpcgate.server.filesystem.names import IdNames
from hpcgate.server.ssh import CommandResult, SSHPool, StdoutSink


@dataclass(frozen=True)
class Remote:
    """One caller on one system: how domain functions reach the cluster."""

    pool: SSHPool
    user: str
    deadline: float | None
    command_timeout: float
    confine: Confine
    names: IdNames = field(default_factory=IdNames)

    def _budget(self) -> float:
        budget = self.command_timeout
        if self.deadline is not None:
            budget = min(budget, self.deadline - time.monotonic())
        return budget

    @contextlib.asynccontextmanager
    async def sftp(self, path: str) -> AsyncIterator[asyncssh.SFTPClient]:
        """The caller's SFTP client for one operation on ``path``.

        SFTP failures become ServiceErrors about ``path`` in the cluster's
        words; running past the budget becomes DEADLINE_EXCEEDED.
        """
        budget = self._budget()
        try:
            async with asyncio.timeout(budget):
                async with self.pool.sftp(self.user, self.deadline) as client:
                    yield client
        except asyncssh.SFTPError as error:
            raise sftp_error(error, path) from None
        except TimeoutError:
            raise ServiceError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"{path}: the SFTP operation did not finish within {max(budget, 0):g} s",
                "SFTP_TIMEOUT",
            ) from None

    async def run(self, argv: Sequence[str], stdin: bytes | None = None) -> bytes:
        """stdout of ``argv`` run as the caller; its mapped error if it fails."""
        return checked(argv, await self.run_unchecked(argv, stdin))

    async def run_unchecked(
        self,
        argv: Sequence[str],
        stdin: bytes | None = None,
        stdout_sink: StdoutSink | None = None,
    ) -> CommandResult:
        """``argv`` run as the caller, whatever its exit status (stdout to ``stdout_sink``)."""
        return await self.pool.run(
            self.user, argv, stdin=stdin, deadline=self.deadline, stdout_sink=stdout_sink
        )

    async def confined_unchecked(
        self,
        name: str,
        body: str,
        paths: Sequence[str],
        args: Sequence[str] = (),
        stdin: bytes | None = None,
        stdout_sink: StdoutSink | None = None,
    ) -> tuple[list[str], CommandResult]:
        """Run the shell step ``body`` (after :meth:`Confine.prelude`) with ``args``.

        ``name`` is the command doing the work, for messages. A refusal the
        step reports (a path of ``paths`` leads outside) is raised; any other
        outcome is returned with the argv, for the caller to judge. With
        ``stdout_sink`` the step's stdout goes there as it arrives; the
        refusal is judged at the end, so the sink's takings count only then.
        """
        if not self.confine.learned:
            async with self.sftp(paths[0]) as client:
                await self.confine.learn_roots(client)
        argv = ["sh", "-c", self.confine.script(body), name, *args]
        try:
            result = await self.run_unchecked(argv, stdin, stdout_sink)
        except ServiceError as error:
            if error.reason == "COMMAND_TIMEOUT":  # name the command, not the shell
                error.message = error.message.replace("'sh'", repr(name), 1)
                error.args = (error.message,)
            raise
        self.confine.outcome(paths, result.exit_status, result.stderr)
        return [name, *argv[1:]], result

    async def confined(
        self,
        name: str,
        body: str,
        paths: Sequence[str],
        args: Sequence[str] = (),
        stdin: bytes | None = None,
    ) -> bytes:
        """stdout of the confined step ``body``; its mapped error if it fails."""
        argv, result = await self.confined_unchecked(name, body, paths, args, stdin)
        return checked(argv, result)
