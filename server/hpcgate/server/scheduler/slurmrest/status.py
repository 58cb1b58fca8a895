"""Slurm's view of the cluster for the Status service, from slurmrestd.

Each answer is read into the same values the CLI plug-in gives
(:mod:`hpcgate.server.scheduler.cluster`): nodes with the parser of
``sinfo --json`` (22.05 writes both from the same v0.0.38 schema), and
partitions and reservations with the words ``scontrol`` prints. User info
(``id``: the POSIX identity) has no REST equivalent: it comes from the CLI
plug-in over SSH.
"""

from __future__ import annotations

import time
from typing import Any

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.cluster import Node, Partition, Reservation, UserInfo
from hpcgate.server.scheduler.commands import Run
from hpcgate.server.scheduler.slurm import parse
from hpcgate.server.scheduler.slurm.status import SlurmStatus
from hpcgate.server.scheduler.slurmrest.client import SlurmRestClient


def _partition(raw: dict[str, Any]) -> Partition:
    return Partition(
        name=str(raw.get("name") or ""),
        partition=str(raw.get("state") or "UNKNOWN"),
        cpus=parse.number(raw.get("total_cpus")),
        total_nodes=parse.number(raw.get("total_nodes")),
    )


def _hidden(raw: dict[str, Any]) -> bool:
    return any(str(flag).lower() == "hidden" for flag in raw.get("flags") or [])


def _reservation(raw: dict[str, Any], now: float) -> Reservation:
    """One reservation; its state as scontrol tells it (``active`` while it runs)."""
    start = parse.number(raw.get("start_time")) or 0
    end = parse.number(raw.get("end_time")) or 0
    return Reservation(
        name=str(raw.get("name") or ""),
        node_list=str(raw.get("node_list") or ""),
        start_time=start,
        end_time=end,
        features=raw.get("features") or None,
        state="active" if start <= now < end else "inactive",
    )


class SlurmRestStatus:
    """Nodes, partitions, reservations and ping from slurmrestd, as the calling user."""

    def __init__(self, client: SlurmRestClient, cli: SlurmStatus) -> None:
        self._client = client
        # For what slurmrestd cannot tell (the caller's POSIX identity).
        self._cli = cli

    async def ping(self, run: Run, user: str) -> None:
        """``ping``: slurmrestd answers, and so does the controller behind it."""
        body = await self._client.request("GET", "ping", user)
        pings = body.get("pings") or []
        if not any(p.get("ping") == "UP" for p in pings):
            said = ", ".join(str(p.get("ping")) for p in pings) or "no controller answered"
            raise ServiceError(ErrorKind.UNAVAILABLE, said, "SCHEDULER_UNAVAILABLE")

    async def nodes(self, run: Run, user: str) -> list[Node]:
        return parse.nodes_from_sinfo(await self._client.request("GET", "nodes", user))

    async def partitions(self, run: Run, user: str, show_hidden: bool) -> list[Partition]:
        # v0.0.38 lists hidden partitions too (with a "hidden" flag), unasked.
        body = await self._client.request("GET", "partitions", user)
        return [
            _partition(raw)
            for raw in body.get("partitions") or []
            if show_hidden or not _hidden(raw)
        ]

    async def reservations(self, run: Run, user: str) -> list[Reservation]:
        body = await self._client.request("GET", "reservations", user)
        now = time.time()
        return [_reservation(raw, now) for raw in body.get("reservations") or []]

    async def user_info(self, run: Run, user: str) -> UserInfo:
        """The CLI plug-in's: slurmrestd knows accounts but not the POSIX groups (``id``)."""
        return await self._cli.user_info(run, user)
