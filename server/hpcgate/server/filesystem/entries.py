"""What ``ls`` returns: entries in FirecREST's File fields, and the directories it could not read.

Shared by the two ways of listing (:mod:`.findlisting`, :mod:`.listing`).
An entry is a NamedTuple: a listing of 100,000 entries makes 100,000 of
them, and a tuple is built in a third of a frozen dataclass's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class FileEntry(NamedTuple):
    """One line of ``ls -l``, in FirecREST's File fields."""

    name: str
    type: str
    link_target: str | None
    user: str
    group: str
    permissions: str
    last_modified: int  # seconds since the epoch
    size: int


@dataclass(frozen=True)
class Unreadable:
    """A directory a recursive listing could not read: its relative name and why."""

    name: str
    message: str


@dataclass(frozen=True)
class Listing:
    """What ``ls`` found: the entries, and (recursive) the directories it could not read."""

    entries: list[FileEntry]
    unreadable: list[Unreadable] = field(default_factory=list)
