"""Slurm's view of the cluster for the Status service, over SSH commands."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.cluster import Node, Partition, Reservation, UserInfo
from hpcgate.server.scheduler.commands import Output, Run
from hpcgate.server.scheduler.slurm import parse
from hpcgate.server.scheduler.slurm.failures import checked


def checked_stdout(argv: Sequence[str], output: Output) -> str:
    """stdout of a command that must succeed (see :mod:`.failures` for how failures read)."""
    return checked(argv, output)


async def _run(run: Run, argv: Sequence[str]) -> str:
    return checked_stdout(argv, await run(argv))


class SlurmStatus:
    """Nodes, partitions, reservations and user info from Slurm's commands.

    ``user`` is used for sacctmgr's filters only: ``run`` is the caller's
    SSH session already.
    """

    async def ping(self, run: Run, user: str) -> None:
        text = await _run(run, ["scontrol", "ping"])
        if "UP" not in text:  # exits 0 although a backup controller is down
            raise ServiceError(ErrorKind.UNAVAILABLE, text.strip(), "SCHEDULER_UNAVAILABLE")

    async def nodes(self, run: Run, user: str) -> list[Node]:
        return parse.nodes_from_sinfo_json(await _run(run, ["sinfo", "--json"]))

    async def partitions(self, run: Run, user: str, show_hidden: bool) -> list[Partition]:
        argv = ["scontrol", "--oneliner", *(["--all"] if show_hidden else []), "show", "partition"]
        return parse.partitions_from_scontrol(await _run(run, argv))

    async def reservations(self, run: Run, user: str) -> list[Reservation]:
        text = await _run(run, ["scontrol", "--oneliner", "show", "reservation"])
        return parse.reservations_from_scontrol(text)

    async def user_info(self, run: Run, user: str) -> UserInfo:
        ids, associations, default = await asyncio.gather(
            _run(run, ["id"]),
            _run(run, ["sacctmgr", "--noheader", "--parsable2", "show", "associations",
                       f"user={user}", "format=account"]),
            _run(run, ["sacctmgr", "--noheader", "--parsable2", "show", "user", user,
                       "format=defaultaccount"]),
        )  # fmt: skip
        return parse.user_info(ids, associations, default.strip())
