"""What a scheduler reports of the cluster and of a user, and the adapter interface for it.

Nodes, partitions, reservations and a user's accounts as plain data (no
protobuf, no HTTP), and :class:`SchedulerStatus`, what the Status service
asks of a scheduler adapter. Field names follow the hpcgate.v1 messages so
that servicers map them with ``Message(**asdict(value))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hpcgate.server.scheduler.commands import Run


@dataclass(frozen=True)
class Node:
    """One compute node. Memory in MiB, as Slurm reports it."""

    name: str
    state: list[str]
    cpus: int
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    cpu_load: float | None = None
    free_memory: int | None = None
    alloc_memory: int | None = None
    alloc_cpus: int | None = None
    idle_cpus: int | None = None
    features: str | None = None
    address: str | None = None
    hostname: str | None = None
    partitions: list[str] = field(default_factory=list)
    weight: int | None = None


@dataclass(frozen=True)
class Partition:
    """One partition; ``partition`` is its state (FirecREST's odd name)."""

    name: str
    partition: str
    cpus: int | None = None
    total_nodes: int | None = None


@dataclass(frozen=True)
class Reservation:
    """One advance reservation; times in seconds since the epoch."""

    name: str
    node_list: str
    start_time: int
    end_time: int
    features: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class PosixId:
    """A numeric POSIX id (as a string, like FirecREST) and its name."""

    id: str
    name: str


@dataclass(frozen=True)
class Account:
    """A scheduler account the user may charge."""

    name: str
    is_default: bool


@dataclass(frozen=True)
class UserInfo:
    """The calling user as the cluster sees them."""

    user: PosixId
    group: PosixId
    groups: list[PosixId]
    accounts: list[Account]


class SchedulerStatus(Protocol):
    """What the Status service (and the health probe) asks of a scheduler.

    Every method gets the runner of commands as the caller (``run``) and the
    caller's name (``user``): an adapter over SSH needs only the first (the
    session already is the caller), one over a REST API only the second
    (the token it sends is minted for that name).
    """

    async def ping(self, run: Run, user: str) -> None: ...
    async def nodes(self, run: Run, user: str) -> list[Node]: ...
    async def partitions(self, run: Run, user: str, show_hidden: bool) -> list[Partition]: ...
    async def reservations(self, run: Run, user: str) -> list[Reservation]: ...
    async def user_info(self, run: Run, user: str) -> UserInfo: ...
