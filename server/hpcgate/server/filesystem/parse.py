"""Text to and from the cluster's commands: output parsers and argument checks.

Pure functions, no I/O: what ``stat -c``, ``getent`` and ``sha256sum``
print, turned into values; and the request's mode, owner and compression
turned into the arguments of ``chmod``, ``chown`` and ``tar`` (or an
INVALID_ARGUMENT naming the field).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument

# ``stat -c`` format: the fields of FileStat, in os.stat_result's order.
STAT_FORMAT = "%f %i %d %h %u %g %s %X %Y %Z"
# tar's flag for each compression FirecREST knows; "" means gzip (its default).
TAR_COMPRESSION: dict[str, tuple[str, ...]] = {
    "none": (),
    "gzip": ("-z",),
    "bzip2": ("-j",),
    "xz": ("-J",),
    "": ("-z",),
}

# The user database (passwd) or the group database of an id.
IdKind = Literal["passwd", "group"]
# getent's lines: passwd has 7 fields, group 4.
_GETENT_KINDS: dict[int, IdKind] = {7: "passwd", 4: "group"}


@dataclass(frozen=True)
class FileStat:
    """A file's ``stat``, in ``os.stat_result``'s fields."""

    mode: int
    ino: int
    dev: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime: int
    mtime: int
    ctime: int


def decode_name(raw: bytes | str) -> str:
    """A file name as text; bytes that are not UTF-8 are shown as ``\\xNN``."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def parse_getent(output: bytes) -> dict[tuple[IdKind, int], str]:
    """(database, id) -> name from ``getent passwd`` (7 fields) and ``group`` (4) lines."""
    found: dict[tuple[IdKind, int], str] = {}
    for line in output.decode(errors="replace").splitlines():
        fields = line.split(":")
        kind = _GETENT_KINDS.get(len(fields))
        if kind is not None and fields[2].isdigit():
            found[(kind, int(fields[2]))] = fields[0]
    return found


def parse_stat(output: bytes) -> FileStat:
    """FileStat from ``stat -c STAT_FORMAT`` (mode in hex, the rest decimal)."""
    fields = output.split()
    if len(fields) != 10:
        raise ServiceError(ErrorKind.INTERNAL, f"unexpected stat output: {output!r}", "BAD_OUTPUT")
    mode, *rest = fields
    ino, dev, nlink, uid, gid, size, atime, mtime, ctime = (int(v) for v in rest)
    return FileStat(int(mode, 16), ino, dev, nlink, uid, gid, size, atime, mtime, ctime)


def parse_sha256sum(output: bytes) -> str:
    """The digest from ``sha256sum`` (a leading ``\\`` marks an escaped name)."""
    digest = output.lstrip(b"\\")[:64].decode(errors="replace")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ServiceError(
            ErrorKind.INTERNAL, f"unexpected sha256sum output: {output!r}", "BAD_OUTPUT"
        )
    return digest


def parse_mode(mode: str) -> int:
    """Permission bits from an octal string such as "755" or "2750"."""
    if not re.fullmatch(r"[0-7]{1,4}", mode):
        raise invalid_argument(
            "mode", f"must be an octal mode of 1 to 4 digits (0-7), got {mode!r}", "INVALID_MODE"
        )
    return int(mode, 8)


def owner_spec(owner: str, group: str) -> str:
    """``chown``'s OWNER[:GROUP] / :GROUP argument; at least one must be given."""
    for name, value in (("owner", owner), ("group", group)):
        if ":" in value or "\x00" in value or value != value.strip():
            raise invalid_argument(name, f"not a valid {name} name: {value!r}", "INVALID_OWNER")
    if not owner and not group:
        raise invalid_argument("owner", "give an owner, a group or both", "INVALID_OWNER")
    return f"{owner}:{group}" if group else owner


def tar_compression(compression: str) -> tuple[str, ...]:
    """tar's flag for FirecREST's compression name; INVALID_ARGUMENT otherwise."""
    flags = TAR_COMPRESSION.get(compression)
    if flags is None:
        raise invalid_argument(
            "compression",
            f"must be one of none, gzip, bzip2, xz; got {compression!r}",
            "INVALID_COMPRESSION",
        )
    return flags
