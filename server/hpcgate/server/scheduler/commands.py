"""How a scheduler adapter runs its commands: as the calling user, over SSH.

The adapters never open connections themselves: the call context hands them
a runner bound to the caller and the RPC's deadline (``SSHPool.run``), so
every scheduler command runs as the user whose request it serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol


class Output(Protocol):
    """The result of one remote command."""

    @property
    def exit_status(self) -> int: ...
    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...


# Runs one command (argv, quoted by the runner) as the calling user.
Run = Callable[[Sequence[str]], Awaitable[Output]]


class RunWithInput(Protocol):
    """Runs one command (argv, quoted by the runner) as the calling user, with optional stdin.

    :meth:`hpcgate.server.ssh.SSHPool.run` bound to a user and a
    deadline is one; it also serves where a plain ``Run`` is expected.
    """

    def __call__(self, argv: Sequence[str], *, stdin: bytes | None = None) -> Awaitable[Output]: ...
