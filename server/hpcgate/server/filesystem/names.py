"""User and group names: uid/gid to name, as ``ls -l`` shows them.

Listings learn names from the SFTP longname (OpenSSH's sftp-server resolves
them as ``ls -l`` does, at no extra cost); what is not learned costs one
``getent`` exec, and is then kept for a few minutes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from hpcgate.server.filesystem.parse import IdKind, decode_name, parse_getent

# Seconds a learned uid/gid -> name mapping is trusted.
NAME_TTL = 300.0
# Most mappings IdNames keeps (it starts afresh when full).
NAME_CACHE_SIZE = 10_000
# Runs getent for (database, id) pairs; returns its stdout.
_GETENT_SCRIPT = 'for key do getent "${key%%:*}" "${key#*:}"; done; exit 0'

# Runs an argv as the caller and returns its stdout (Remote.run).
RunArgv = Callable[[Sequence[str]], Awaitable[bytes]]


class IdNames:
    """uid/gid -> name, learned from listings or looked up with ``getent``.

    Shared by every call on one system: the user database is the system's,
    not the caller's. Entries expire after ``ttl`` seconds so renames show.
    An id unknown to the system maps to its number, as ``ls -l`` shows it.
    """

    def __init__(self, ttl: float = NAME_TTL, capacity: int = NAME_CACHE_SIZE) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._known: dict[tuple[IdKind, int], tuple[str, float]] = {}

    def learn(self, kind: IdKind, ident: int, name: str) -> None:
        """Remember that ``ident`` is called ``name`` in ``kind``."""
        if len(self._known) >= self._capacity:
            self._known.clear()
        self._known[(kind, ident)] = (name, time.monotonic() + self._ttl)

    def get(self, kind: IdKind, ident: int) -> str | None:
        """The name of ``ident`` if known and fresh."""
        hit = self._known.get((kind, ident))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def cached(self, wanted: Iterable[tuple[IdKind, int]]) -> dict[tuple[IdKind, int], str] | None:
        """Names for ``wanted`` if every one is known and fresh, else None (no lookup)."""
        found: dict[tuple[IdKind, int], str] = {}
        for key in wanted:
            name = self.get(*key)
            if name is None:
                return None
            found[key] = name
        return found

    async def resolve(
        self, run: RunArgv, wanted: Iterable[tuple[IdKind, int]]
    ) -> dict[tuple[IdKind, int], str]:
        """Names for ``wanted``; the unknown ones cost one ``getent`` exec together (``run``)."""
        wanted = set(wanted)
        missing = sorted(key for key in wanted if self.get(*key) is None)
        if missing:
            argv = ["sh", "-c", _GETENT_SCRIPT, "sh", *(f"{k}:{i}" for k, i in missing)]
            for key, name in parse_getent(await run(argv)).items():
                self.learn(*key, name)
            for key in missing:
                if self.get(*key) is None:
                    self.learn(*key, str(key[1]))
        return {key: self.get(*key) or str(key[1]) for key in wanted}


def longname_owner(longname: bytes | str | None) -> tuple[str, str] | None:
    """User and group from an SFTP ``ls -l``-style longname, if it has them.

    OpenSSH writes ``mode nlink user group size date name``; names cannot hold
    whitespace, so the third and fourth fields are exact.
    """
    if not longname:
        return None
    fields = decode_name(longname).split(None, 4)
    if len(fields) < 5 or len(fields[0]) < 10 or not fields[1].isdigit():
        return None
    return fields[2], fields[3]
