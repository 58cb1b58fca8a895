"""The first steps of every RPC that reaches a cluster.

Resolve the system, check the caller may use it, fail fast when a needed
service is unhealthy, and fix the deadline: :func:`begin` does all four and
returns what the domain call needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpcgate.server.auth.authz import authorize
from hpcgate.server.rpc.authentication import current_identity
from hpcgate.server.runtime import Runtime, SystemRuntime
from hpcgate.server.scheduler.base import Run
from hpcgate.server.servicers.context import Context
from hpcgate.server.ssh import deadline_after


@dataclass(frozen=True)
class Call:
    """One RPC's system, calling user and absolute deadline (``time.monotonic``)."""

    system: SystemRuntime
    user: str
    deadline: float | None

    @property
    def run(self) -> Run:
        """Run commands as the caller, within the RPC's deadline."""
        return self.system.runner(self.user, self.deadline)


def begin(runtime: Runtime, system_name: str, context: Context, *services: str) -> Call:
    """Resolve, authorise and health-gate a call to ``system_name`` needing ``services``."""
    identity = current_identity()
    system = runtime.system(system_name)
    authorize(identity, system.config)
    system.health.require(*services)
    return Call(system, identity.username, deadline_after(context.time_remaining()))
