"""The health checker: probes each system's services on an interval.

One background task per system runs every probe concurrently, each bounded
by ``probing.timeout``, and keeps the latest result per service. Requests
consult it through :meth:`HealthChecker.require`, so a call to a service
known to be down fails at once with UNAVAILABLE instead of waiting for a
connect timeout. Changes are pushed to ``grpc.health.v1`` by a callback.

In a fleet one replica probes each system (the holder of its lease) and
stores the results in the shared store; the others read them every interval
instead of probing; when the prober dies, its lease lapses before its
results do, and another replica takes the probing over. With the store
down, each replica probes for itself. :meth:`HealthChecker.results`
then also carries a ``coordination`` entry: whether the shared store answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import TypeAdapter

from hpcgate.server.coordination import LOCAL, Coordinator, MemoryCoordinator
from hpcgate.server.errors import ErrorKind, ServiceError, redact_addresses
from hpcgate.server.health.probes import Probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceHealth:
    """The latest probe result of one service (FirecREST's servicesHealth entry)."""

    service_type: str
    healthy: bool
    last_checked: datetime
    latency: float | None = None
    message: str | None = None
    path: str | None = None
    # The reason a gated call is refused with while this is unhealthy, when
    # the probe tells one (see Probe.reasons); else SERVICE_UNHEALTHY.
    reason: str | None = None


OnChange = Callable[[str, dict[str, bool]], Awaitable[None]]

_SHARED: TypeAdapter[list[ServiceHealth]] = TypeAdapter(list[ServiceHealth])


def _describe(error: BaseException) -> str:
    """What a probe found, for /status/systems and 503 bodies: never a backend's address."""
    if isinstance(error, ServiceError):
        return redact_addresses(error.message)
    if isinstance(error, TimeoutError):
        return "probe timed out"
    return redact_addresses(str(error)) or type(error).__name__


class HealthChecker:
    """Probes one system's services every ``interval`` seconds."""

    def __init__(
        self,
        system: str,
        probes: Sequence[Probe],
        interval: float,
        timeout: float,
        on_change: OnChange | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        """``coordinator`` shares the probing with the fleet (default: this process alone)."""
        self.system = system
        self._coordinator: Coordinator = coordinator or MemoryCoordinator()
        self._lease = f"health:{system.lower()}"
        self._probes = list(probes)
        self._interval = interval
        self._timeout = timeout
        self._on_change = on_change
        self._results: dict[tuple[str, str | None], ServiceHealth] = {}
        self.last_run: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_run = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"health-{self.system}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_first_run(self) -> None:
        await self._first_run.wait()

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            await self._round()
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    async def _round(self) -> None:
        """Probe, or, in a fleet, take the results of the replica whose turn it is."""
        coordinator = self._coordinator
        if not coordinator.shared:
            await self.check_now()
            return
        # The lease outlives a round (probes included) so the holder keeps it.
        token = await coordinator.claim(self._lease, 2 * self._interval + self._timeout)
        if token is not None:
            await self.check_now()
            if token != LOCAL:
                shared = _SHARED.dump_json(list(self._results.values()))
                await coordinator.store(self._lease, shared, 3 * self._interval + self._timeout)
            return
        # Nothing stored yet: the prober's first round is under way (its
        # results outlive its lease, so a dead prober is replaced first).
        stored = await coordinator.load(self._lease)
        if stored is not None:
            await self._record(_SHARED.validate_json(stored))

    async def _probe(self, probe: Probe) -> ServiceHealth:
        started = time.monotonic()
        try:
            await asyncio.wait_for(probe.check(), self._timeout)
        except Exception as error:  # any failure is the probe's finding
            reason = getattr(error, "reason", None)
            return ServiceHealth(
                probe.service_type,
                False,
                datetime.now(UTC),
                None,
                _describe(error),
                probe.path,
                reason if reason in probe.reasons else None,
            )
        latency = time.monotonic() - started
        return ServiceHealth(probe.service_type, True, datetime.now(UTC), latency, None, probe.path)

    async def check_now(self) -> None:
        """Run every probe once and record the results."""
        await self._record(await asyncio.gather(*(self._probe(p) for p in self._probes)))

    async def _record(self, results: Sequence[ServiceHealth]) -> None:
        """Keep ``results`` as the latest; report a change."""
        before = self.by_type()
        self._results = {(r.service_type, r.path): r for r in results}
        self.last_run = datetime.now(UTC)
        self._first_run.set()
        after = self.by_type()
        if after != before:
            for result in results:
                if not result.healthy:
                    log.warning(
                        "system %s: %s unhealthy: %s",
                        self.system,
                        result.path or result.service_type,
                        result.message,
                    )
            if self._on_change is not None:
                await self._on_change(self.system, after)

    def results(self) -> list[ServiceHealth]:
        """The latest result per probe; in a fleet, the shared store's health too."""
        results = list(self._results.values())
        state = self._coordinator.health()
        if state.shared and self.last_run is not None:
            results.append(
                ServiceHealth("coordination", state.healthy, self.last_run, message=state.message)
            )
        return results

    def by_type(self) -> dict[str, bool]:
        """Healthy per service type (a type is healthy when all its probes are)."""
        healthy: dict[str, bool] = {}
        for (service_type, _), result in self._results.items():
            healthy[service_type] = healthy.get(service_type, True) and result.healthy
        return healthy

    def require(self, *service_types: str) -> None:
        """Fail fast with UNAVAILABLE when a needed service is known to be down.

        Before the first probe has finished nothing is known, and the call goes on.
        """
        for result in self._results.values():
            if result.service_type in service_types and not result.healthy:
                what = result.path or result.service_type
                raise ServiceError(
                    ErrorKind.UNAVAILABLE,
                    f"{self.system}: {what} is unhealthy: {result.message}",
                    result.reason or "SERVICE_UNHEALTHY",
                    metadata={"system": self.system, "service": result.service_type},
                )
