"""``ls -l`` of one directory as one confined ``find -printf`` step, parsed in one pass.

Why not SFTP here: asyncssh decodes every readdir entry's attributes in
Python (~15 us each, two thirds of the server's CPU per entry), and a
readdir is one round trip per ~100 entries; ``find`` on the cluster does
the lstat calls there and sends a few bytes per field. On the loopback
cluster the ``ls -l`` exec floor is 3x faster than SFTP readdir from 1,000
entries up (``bench/scenarios/big_dir.py``).

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
from hpcgate.server.filesystem.parse import IdKind, decode_name
from hpcgate.server.filesystem.remote import Remote

# Per entry, each field followed by a NUL: ls -l's mode column, uid, gid,
# size, mtime in whole seconds, the name, the link target ("" unless a link).
FORMAT = r"%M\0%U\0%G\0%s\0%Ts\0%P\0%l\0"
FIELDS = 7
# The step's exit status when the path is not a directory it may enter.
NOT_A_DIRECTORY = 90
_STEP = f"""
cd -P -- "$1" 2>/dev/null || exit {NOT_A_DIRECTORY}
inside "$PWD" 1
exec find . -mindepth 1 -maxdepth 1 -printf "$2"
"""
_NAME = itemgetter(5)


async def listed(remote: Remote, path: str, show_hidden: bool, numeric_uid: bool) -> Listing | None:
    """The entries of the directory ``path``, sorted by name; None to list it over SFTP.

    None when ``path`` is not an enterable directory, or when ``find``
    failed (an entry vanished under it, an unreadable directory): SFTP then
    gives the single entry or the error, in the cluster's words.
    """
    _, result = await remote.confined_unchecked("find", _STEP, [path], [path, FORMAT])
    if result.exit_status != 0:
        return None
    records = parse(result.stdout, show_hidden)
    owners = None if numeric_uid else await _owners(remote, records)
    return Listing(entries(records, owners))


Owners = tuple[dict[str, str], dict[str, str]]  # uid -> user name, gid -> group name


async def _owners(remote: Remote, records: list[tuple[str, ...]]) -> Owners:
    """Names of the records' owners and groups: the cache, or one ``getent`` for the rest."""
    ids = {(r[1], r[2]) for r in records}
    wanted: set[tuple[IdKind, int]] = set()
    for uid, gid in ids:
        wanted.update({("passwd", int(uid)), ("group", int(gid))})
    resolved = await remote.names.resolve(remote.run, wanted)
    users = {uid: resolved[("passwd", int(uid))] for uid, _ in ids}
    groups = {gid: resolved[("group", int(gid))] for _, gid in ids}
    return users, groups


def parse(output: bytes, show_hidden: bool) -> list[tuple[str, ...]]:
    """``find``'s records as text fields, hidden names dropped unless shown, sorted by name.

    The whole output is decoded at once when it is UTF-8 (the usual case);
    else field by field, names not UTF-8 shown as ``\\xNN``. Sorted by the
    names' bytes either way (code points sort as UTF-8 bytes do): ``ls``
    order in the C locale.
    """
    try:
        fields = output.decode().split("\0")
    except UnicodeDecodeError:
        fields = [decode_name(raw) for raw in output.split(b"\0")]
        keys = output.split(b"\0")[5::FIELDS]
        records = list(zip(*[iter(fields[: len(keys) * FIELDS])] * FIELDS, strict=True))
        ordered = [r for _, r in sorted(zip(keys, records, strict=True), key=itemgetter(0))]
        return [r for r in ordered if show_hidden or not r[5].startswith(".")]
    count = len(fields) // FIELDS
    records = list(zip(*[iter(fields[: count * FIELDS])] * FIELDS, strict=True))
    if not show_hidden:
        records = [r for r in records if not r[5].startswith(".")]
    records.sort(key=_NAME)
    return records


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
