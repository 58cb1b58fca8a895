"""What every scenario gets: the running stack, the plan, the data, the clients.

Clients are shared across scenarios on purpose: a workflow engine keeps one
gRPC channel and one HTTP client, and a benchmark that opened a new one per
figure would measure connection set-up instead of the service. Many REST
requests at once go through :class:`ClientPerConnection` (see there why).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import httpx

from bench.httpclients import ClientPerConnection
from bench.measure import Plan
from bench.model import Figure
from bench.remote import Dataset, Link
from bench.stack import Stack


@dataclass
class Context:
    """Shared by the scenarios of one run."""

    stack: Stack
    plan: Plan
    dataset: Dataset
    ssh: Link  # one connection as alice: the raw floors
    channel: grpc.aio.Channel  # to the server, authenticated per call
    http: httpx.AsyncClient  # to the edge, with alice's token
    rest: ClientPerConnection  # to the edge, with alice's token: many requests at once
    sizes: tuple[int, ...]  # file counts of the small-files scenario

    @property
    def max_sessions(self) -> int:
        """sshd's MaxSessions: channels one SSH connection may have open at once."""
        return int(self.stack.cluster["ssh"].get("max_sessions", 10))


Scenario = Callable[[Context], Awaitable[list[Figure]]]
