"""Who counts the scheduler requests an adapter makes: the watch pollers do.

A poller counts every scheduler command its snapshot runs (it wraps the
runner), but a REST plug-in's requests do not go through the runner. So the
poller also sets a tally for the duration of its snapshot (a context
variable: the tasks the adapter starts inherit it), and the REST client
reports each request it sends to :func:`note_request`. Outside a poll
nothing is counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_TALLY: ContextVar[Callable[[], None] | None] = ContextVar("scheduler_tally", default=None)


def note_request() -> None:
    """One request to the scheduler was sent (counted if a poll is under way)."""
    tally = _TALLY.get()
    if tally is not None:
        tally()


@contextlib.contextmanager
def tallied(count: Callable[[], None]) -> Iterator[None]:
    """Within the block, every :func:`note_request` calls ``count``."""
    token = _TALLY.set(count)
    try:
        yield
    finally:
        _TALLY.reset(token)
