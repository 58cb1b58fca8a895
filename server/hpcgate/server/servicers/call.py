"""The one context of every RPC that reaches a cluster.

:func:`begin` takes the first steps every such RPC shares: resolve the
system the request names, check that the caller may use it, fail fast
(UNAVAILABLE) while a service the method needs is known to be unhealthy,
and fix the deadline. The needs are the method's own, declared in the
contracts (:mod:`.needs`) and looked up by the name of the RPC being
served. The :class:`Call` it returns hands each domain what that domain
needs, built here and nowhere else: a runner of scheduler commands, a
filesystem :class:`~hpcgate.server.filesystem.remote.Remote`, a transfer
:class:`~hpcgate.server.transfer.jobs.Submitter`, a job watcher.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from hpcgate.server.auth.authz import authorize
from hpcgate.server.config import SystemConfig
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.paths import check_path
from hpcgate.server.filesystem.remote import Remote
from hpcgate.server.rpc.authentication import current_identity
from hpcgate.server.rpc.context import Context
from hpcgate.server.rpc.observability import current_request
from hpcgate.server.runtime import Runtime, SystemRuntime
from hpcgate.server.scheduler.commands import RunWithInput
from hpcgate.server.scheduler.watch import Subscription
from hpcgate.server.servicers.needs import NEEDS
from hpcgate.server.ssh import deadline_after
from hpcgate.server.transfer.jobs import Submitter


@dataclass(frozen=True)
class Call:
    """One RPC's system, calling user and absolute deadline (``time.monotonic``)."""

    system: SystemRuntime
    user: str
    deadline: float | None

    @property
    def config(self) -> SystemConfig:
        return self.system.config

    @property
    def run(self) -> RunWithInput:
        """Run scheduler commands as the caller, within the RPC's deadline."""
        return self.system.runner(self.user, self.deadline)

    def path(self, field: str, path: str) -> str:
        """``path`` normalised, if the system's path policy allows it (else names ``field``)."""
        return check_path(self.config, field, path)

    def confine(self, fields: Mapping[str, str]) -> Confine:
        """The system's confinement, naming each checked path's field (path -> field)."""
        return Confine.of(self.config, fields)

    def remote(self, **paths: str) -> tuple[Remote, list[str]]:
        """How filesystem domain code reaches the cluster as the caller, and ``paths``.

        ``paths`` (field name -> value) come back checked by the path policy,
        in order. The Remote's confinement knows which field named which path,
        so a path found on the cluster to lead outside is refused naming its
        field.
        """
        checked = {field: self.path(field, value) for field, value in paths.items()}
        remote = Remote(
            pool=self.system.pool,
            user=self.user,
            deadline=self.deadline,
            command_timeout=self.config.ssh.timeouts.command,
            confine=self.confine({path: field for field, path in checked.items()}),
            names=self.system.names,
        )
        return remote, list(checked.values())

    @contextlib.asynccontextmanager
    async def watcher(
        self, context: Context, job_ids: frozenset[int]
    ) -> AsyncIterator[Subscription]:
        """The caller's watcher of ``job_ids`` (none: all the caller's jobs) on the system's hub.

        It leaves the hub when the block ends, and also when the stream is
        dropped while suspended between messages (the block then never ends).
        """
        hub = self.system.watch
        async with hub.subscribe(self.user, job_ids) as watcher:
            # grpc-stubs types the callback as a class; any callable of the context works.
            cast(Any, context).add_done_callback(lambda _: hub.unsubscribe(watcher))
            yield watcher

    def submitter(self) -> Submitter:
        """Submits the caller's transfer jobs; the caller's job watchers hear of each."""
        return Submitter(
            self.config,
            self.system.jobs,
            self.run,
            self.user,
            partial(self.system.watch.nudge, self.user),
        )


def begin(runtime: Runtime, system_name: str, context: Context) -> Call:
    """Resolve, authorise and health-gate the RPC being served, for ``system_name``.

    The needs are those its contract declares; the RPC is the one the
    observability concern (outermost of every call) recorded for this task.
    """
    request = current_request()
    if request is None:
        raise RuntimeError("begin() outside an RPC: no method to take the needs of")
    identity = current_identity()
    system = runtime.system(system_name)
    authorize(identity, system.config)
    system.health.require(*NEEDS[request.method])
    return Call(system, identity.username, deadline_after(context.time_remaining()))
