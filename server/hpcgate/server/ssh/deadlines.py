"""Deadlines and time budgets of remote commands.

A request's deadline is an absolute ``time.monotonic()`` value (see
:func:`deadline_after`). A command gets a *budget* of seconds: its own
timeout, cut to the deadline. The budget is enforced twice, on the cluster by
wrapping the command in ``timeout`` (so a runaway command is killed there, not
just abandoned) and locally a little later (:func:`local_wait`), in case the
remote side never answers.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence

from hpcgate.server.errors import ErrorKind, ServiceError

# Seconds the remote `timeout` waits after TERM before it sends KILL.
KILL_AFTER = 5
# Extra seconds the local side waits beyond the remote timeout before giving up.
LOCAL_GRACE = 5.0
# A command gets at least this much time, or it is not started at all.
MIN_COMMAND_TIME = 0.05
# Exit statuses of `timeout`: the command timed out (TERM), or needed KILL.
TIMEOUT_STATUSES = (124, 128 + 9)


def deadline_after(seconds: float | None) -> float | None:
    """The absolute deadline ``seconds`` from now (None stays None).

    For a gRPC handler: ``deadline_after(context.time_remaining())``.
    """
    return None if seconds is None else time.monotonic() + seconds


def cut_to_deadline(budget: float, deadline: float | None) -> tuple[float, bool]:
    """``budget`` cut to the time left before ``deadline``, and whether it was cut."""
    if deadline is not None and deadline - time.monotonic() < budget:
        return deadline - time.monotonic(), True
    return budget, False


def timeout_line(argv: Sequence[str], budget: float) -> str:
    """The shell line that runs ``argv`` under the remote ``timeout`` of ``budget`` seconds."""
    return shlex.join(["timeout", f"--kill-after={KILL_AFTER}", f"{budget:.3f}", *argv])


def local_wait(budget: float) -> float:
    """How long the local side waits for a command of ``budget`` seconds to end."""
    return budget + KILL_AFTER + LOCAL_GRACE


def command_timeout(
    system: str, argv: Sequence[str], budget: float, cut_by_deadline: bool, service: str | None
) -> ServiceError:
    """DEADLINE_EXCEEDED; UNAVAILABLE when a ``service``'s command ran out of its own time."""
    if service is not None and not cut_by_deadline:
        return ServiceError(
            ErrorKind.UNAVAILABLE,
            f"{system}: the {service} is not answering: {argv[0]!r} did not finish"
            f" within {budget:g} s",
            f"{service.upper()}_TIMEOUT",
            metadata={"system": system, "service": service},
        )
    limit = "the request's deadline" if cut_by_deadline else f"its timeout of {budget:g} s"
    return ServiceError(
        ErrorKind.DEADLINE_EXCEEDED,
        f"command {argv[0]!r} did not finish within {limit}",
        "COMMAND_TIMEOUT",
    )
