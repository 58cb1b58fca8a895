"""The interface every scheduler adapter implements, and how it runs commands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from hpcgate.server.scheduler.models import Node, Partition, Reservation, UserInfo


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


class SchedulerStatus(Protocol):
    """What the Status service asks of a scheduler."""

    async def ping(self, run: Run) -> None: ...
    async def nodes(self, run: Run) -> list[Node]: ...
    async def partitions(self, run: Run, show_hidden: bool) -> list[Partition]: ...
    async def reservations(self, run: Run) -> list[Reservation]: ...
    async def user_info(self, run: Run, username: str) -> UserInfo: ...
