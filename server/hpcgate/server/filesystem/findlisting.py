"""``ls -l`` of one directory as one confined ``find -printf`` step, parsed as it arrives.

Why not SFTP here: asyncssh decodes every readdir entry's attributes in
Python (~15 us each, two thirds of the server's CPU per entry), and a
readdir is one round trip per ~100 entries; ``find`` on the cluster does
the lstat calls there and sends a few bytes per field. On the loopback
cluster this step is 5x faster than SFTP readdir from 1,000 entries up,
and twice as fast as ``ls -l``, which also reads every entry's ACL and
SELinux attributes and, like ``find`` without TZ, stats /etc/localtime for
every time it formats (``bench/scenarios/big_dir.py``).

Confined in one step (see :mod:`.confine`): the shell enters the real
directory (``cd -P``), checks ``$PWD`` is inside the filesystems, and
``find`` lists ``.``, the held working directory, without following any
link in it. A directory swapped for a link after the check is never
followed, which SFTP (no openat) could not promise.

The output is NUL-separated fields, NUL being the one byte no name or link
target can hold, so adversarial names (newlines, invalid UTF-8) cannot
shift a field. Owners come as numbers, named from :class:`.names.IdNames`
(``find``'s ``%u`` costs a getpwuid per entry: 3x slower).

Used for plain listings (hidden or not, numeric or not) of directories
of more than one block (:data:`.listing.FIND_FROM_SIZE`). Small ones,
recursive and dereferencing listings are listed by :mod:`.listing` over
SFTP, and so is a directory this step cannot enter or list after all
(removed, replaced, no search permission): SFTP then reports why.
"""

from __future__ import annotations

from operator import itemgetter

from hpcgate.server.filesystem.entries import FileEntry, Listing
from hpcgate.server.filesystem.names import IdNames, RunArgv
from hpcgate.server.filesystem.parse import IdKind, decode_name
from hpcgate.server.filesystem.remote import Remote

# Per entry, each field followed by a NUL: ls -l's mode column, uid, gid,
# size, mtime in whole seconds, the name, the link target ("" unless a link).
FORMAT = r"%M\0%U\0%G\0%s\0%Ts\0%P\0%l\0"
FIELDS = 7
NAME_FIELD = 5  # %P's place in a record
# The step's exit status when the path is not a directory it may enter.
NOT_A_DIRECTORY = 90
# TZ: find's %T asks localtime() per entry, and glibc, with TZ unset, stats
# /etc/localtime on every call: three more stat calls per entry, which made
# find 2.7x slower (0.83 against 0.31 s for 100,000 entries). %Ts, seconds
# since the epoch, is the same in every zone.
_STEP = f"""
cd -P -- "$1" 2>/dev/null || exit {NOT_A_DIRECTORY}
inside "$PWD" 1
export TZ=UTC0
exec find . -mindepth 1 -maxdepth 1 -printf "$2"
"""
_NAME = itemgetter(0)  # a FileEntry's name


async def listed(remote: Remote, path: str, show_hidden: bool, numeric_uid: bool) -> Listing | None:
    """The entries of the directory ``path``, sorted by name; None to list it over SFTP.

    None when ``path`` is not an enterable directory, or when ``find``
    failed (an entry vanished under it, an unreadable directory): SFTP then
    gives the single entry or the error, in the cluster's words.
    """
    found = Found(remote.names, remote.run, show_hidden, numeric_uid)
    _, result = await remote.confined_unchecked(
        "find", _STEP, [path], [path, FORMAT], stdout_sink=found.feed
    )
    if result.exit_status != 0:
        return None
    return Listing(await found.entries())


Owners = tuple[dict[str, str], dict[str, str]]  # uid -> user name, gid -> group name


class Found:
    """``find``'s entries, parsed and named while its output still arrives.

    The work per entry (decoding, FileEntry, owners) is most of the
    server's CPU for a big directory, and ``find`` sends its output over
    tens of milliseconds: done as each chunk arrives, it ends with the
    step instead of after it. A chunk may end anywhere (mid-field,
    mid-character): the complete records are taken, the rest waits for the
    next chunk; a cut after a NUL never splits a UTF-8 character. Owners
    are named from the cache; records with an owner it does not know wait
    for the end, when one ``getent`` names them (mid-step it would need a
    second channel of the caller's, which the pool may not have).
    """

    def __init__(self, names: IdNames, run: RunArgv, show_hidden: bool, numeric_uid: bool) -> None:
        """``names`` and ``run`` (getent, at the end) name the owners unless ``numeric_uid``."""
        self._names = names
        self._run = run
        self._show_hidden = show_hidden
        self._numeric = numeric_uid
        self._tail = b""
        self._entries: list[FileEntry] = []
        self._unnamed: list[tuple[str, ...]] = []
        # The bytes of the names shown otherwise than they are (not UTF-8), for the order.
        self._raw: dict[str, bytes] = {}

    async def feed(self, chunk: bytes) -> None:
        """Take the complete records of what has arrived; keep the rest for the next chunk."""
        data = self._tail + chunk if self._tail else chunk
        cut = _records_end(data)
        self._tail = data[cut:]
        if cut:
            self._take(data[:cut])

    def _take(self, block: bytes) -> None:
        try:
            fields = block.decode().split("\0")
        except UnicodeDecodeError:
            raw = block.split(b"\0")
            fields = [decode_name(field) for field in raw]
            self._raw.update(zip(fields[NAME_FIELD::FIELDS], raw[NAME_FIELD::FIELDS], strict=True))
        records = list(zip(*[iter(fields[:-1])] * FIELDS, strict=True))
        if not self._show_hidden:
            records = [r for r in records if not r[NAME_FIELD].startswith(".")]
        if self._numeric:
            self._entries += entries(records, None)
            return
        ids, wanted = _wanted(records)
        cached = self._names.cached(wanted)
        if cached is None:
            self._unnamed += records
        else:
            self._entries += entries(records, _named(ids, cached))

    async def entries(self) -> list[FileEntry]:
        """Every entry, named, sorted by the names' bytes (``ls`` order in the C locale)."""
        if self._tail:
            raise ValueError("find's output ended inside a record")
        if self._unnamed:
            owners = await _owners(self._names, self._run, self._unnamed)
            self._entries += entries(self._unnamed, owners)
            self._unnamed = []
        if not self._raw:  # code points sort as UTF-8 bytes do
            self._entries.sort(key=_NAME)
        else:
            raw = self._raw
            self._entries.sort(key=lambda entry: raw.get(entry.name) or entry.name.encode())
        return self._entries


def _records_end(data: bytes) -> int:
    """Where the last complete record of ``data`` ends: just past its last field's NUL."""
    extra = data.count(b"\0") % FIELDS  # fields of a record not yet complete
    end = len(data)
    for _ in range(extra + 1):
        end = data.rfind(b"\0", 0, end)
        if end < 0:
            return 0
    return end + 1


async def _owners(names: IdNames, run: RunArgv, records: list[tuple[str, ...]]) -> Owners:
    """Names of the records' owners and groups: the cache, or one ``getent`` for the rest."""
    ids, wanted = _wanted(records)
    return _named(ids, await names.resolve(run, wanted))


OwnerIds = set[tuple[str, str]]  # (uid, gid) as find prints them


def _wanted(records: list[tuple[str, ...]]) -> tuple[OwnerIds, set[tuple[IdKind, int]]]:
    """The records' (uid, gid) pairs, and the user and group ids to name for them."""
    ids = {(r[1], r[2]) for r in records}
    wanted: set[tuple[IdKind, int]] = set()
    for uid, gid in ids:
        wanted.update({("passwd", int(uid)), ("group", int(gid))})
    return ids, wanted


def _named(ids: OwnerIds, names: dict[tuple[IdKind, int], str]) -> Owners:
    """uid -> user name and gid -> group name of ``ids``, from ``names``."""
    users = {uid: names[("passwd", int(uid))] for uid, _ in ids}
    groups = {gid: names[("group", int(gid))] for _, gid in ids}
    return users, groups


def entries(records: list[tuple[str, ...]], owners: Owners | None) -> list[FileEntry]:
    """FileEntries of parsed records; owners named from ``owners``, else numeric."""
    users, groups = owners if owners is not None else ({}, {})
    result: list[FileEntry] = []
    append = result.append
    for mode, uid, gid, size, mtime, name, target in records:
        append(
            FileEntry(
                name,
                mode[0],
                target if mode[0] == "l" else None,
                users.get(uid, uid),
                groups.get(gid, gid),
                mode[1:],
                int(mtime),
                int(size),
            )
        )
    return result
