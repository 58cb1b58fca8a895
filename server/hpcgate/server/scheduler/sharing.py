"""The messages a user's poller exchanges with the other replicas of a fleet.

On ``jobs:<system>:<user>`` the replica holding the user's poller lease
publishes each poll's whole answer (:class:`View`: a full view, not a diff,
so a replica that missed a message or takes over loses no transition: it
compares the next view with the last one it saw), or the error that ended
the watches. On ``want:<system>:<user>`` replicas with watchers say which
jobs they follow by number, and ask for a poll soon (:class:`Want`). JSON
throughout (pydantic validates what comes in): nothing from Redis is
unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import TypeAdapter

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.scheduler.jobs import Job


@dataclass(frozen=True)
class View:
    """One poll's answer: ``jobs`` as seen at ``observed`` (epoch seconds).

    ``joined`` is the user's join counter when the poll started: a watcher
    that joined with a number up to it may take this view as its baseline.
    """

    sender: str
    joined: int
    observed: float
    jobs: tuple[Job, ...]


@dataclass(frozen=True)
class Failure:
    """The error that ended every watch of the user."""

    sender: str
    code: ErrorKind
    message: str
    reason: str

    def error(self) -> ServiceError:
        return ServiceError(self.code, self.message, self.reason)


@dataclass(frozen=True)
class Want:
    """A replica's watchers follow ``named`` (besides the user's own jobs); ``soon``: poll now."""

    sender: str
    named: tuple[int, ...]
    soon: bool


_RESULT: TypeAdapter[View | Failure] = TypeAdapter(View | Failure)
_WANT: TypeAdapter[Want] = TypeAdapter(Want)


def jobs_channel(system: str, user: str) -> str:
    return f"jobs:{system.lower()}:{user}"


def want_channel(system: str, user: str) -> str:
    return f"want:{system.lower()}:{user}"


def encode_result(result: View | Failure) -> bytes:
    return _RESULT.dump_json(result)


def decode_result(data: bytes) -> View | Failure:
    return _RESULT.validate_json(data)


def encode_want(want: Want) -> bytes:
    return _WANT.dump_json(want)


def decode_want(data: bytes) -> Want:
    return _WANT.validate_json(data)
