"""What an archive would create, from tar's own listing, judged before anything is extracted.

An archive is refused (PATH_OUTSIDE_FILESYSTEMS) if a member would land
outside the target directory (``../`` in its name, or a directory of the
target that is a link leading outside), or if it would create a link
leading outside the configured filesystems. The listing is GNU tar's
``tar -t -v --quoting-style=c``: Python's tarfile cannot read the archive
where it lies without pulling all of it over the wire, and tar's listing is
exactly what tar will extract.
"""

from __future__ import annotations

import codecs
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hpcgate.server.errors import ErrorKind, ServiceError
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.errors import checked, command_error
from hpcgate.server.scheduler.commands import Output, RunWithInput

# "MODE OWNER SIZE DATE TIME REST": REST is the C-quoted name, then for a
# symbolic link ` -> "TARGET"`, for a hard link ` link to "TARGET"`.
_LINE = re.compile(r'^(\S)\S*\s+\S+\s+\S+\s+\S+\s+\S+\s+(".*)$')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
LIST_OPTIONS = ("-t", "-v", "--quoting-style=c", "--numeric-owner")


@dataclass(frozen=True)
class Member:
    """One archive member: its type letter (``l`` link, ``h`` hard link, ...), name, link target."""

    kind: str
    name: str
    link: str | None = None


def _unquote(text: str) -> str:
    raw, _ = codecs.escape_decode(text.encode("utf-8", "surrogateescape"))
    return bytes(raw).decode("utf-8", "surrogateescape")


def parse_listing(output: bytes) -> list[Member]:
    """The members of ``tar -t -v --quoting-style=c`` output."""
    members = []
    for line in output.decode("utf-8", "surrogateescape").splitlines():
        match = _LINE.match(line)
        if match is None:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"unexpected line in tar's listing: {line[:200]!r}",
                "TAR_FAILED",
            )
        kind, rest = match.groups()
        quoted = _QUOTED.findall(rest)
        name = _unquote(quoted[0]) if quoted else ""
        link = _unquote(quoted[1]) if kind in "lh" and len(quoted) > 1 else None
        members.append(Member(kind, name, link))
    return members


def _escapes(name: str) -> bool:
    return ".." in name.split("/")


def _outside(archive: str, member: str, why: str) -> ServiceError:
    message = f"{archive}: member {member!r} {why}; nothing was extracted"
    return ServiceError(
        ErrorKind.INVALID_ARGUMENT,
        f"sourcePath: {message}",
        "PATH_OUTSIDE_FILESYSTEMS",
        fields={"sourcePath": message},
        metadata={"path": archive},
    )


@dataclass(frozen=True)
class Place:
    """A place an extraction reaches, to be resolved on the cluster (``realpath -m``)."""

    member: str
    path: str  # absolute
    link: bool  # a link's destination (must be inside the filesystems), else a
    # member's directory (must be inside the target directory)


def places(archive: str, target: str, members: Iterable[Member]) -> list[Place]:
    """Check what can be checked by text, and list the places to resolve on the cluster.

    ``target`` is the real target directory. GNU tar strips a leading ``/``
    from names (so those land inside); a ``..`` component is refused here.
    Each member directory is listed once: a link already in the target
    (``tmplink -> /tmp``) would carry the members below it elsewhere.
    """
    found: list[Place] = []
    directories: set[str] = set()
    for member in members:
        name = member.name.lstrip("/")
        if _escapes(name):
            raise _outside(archive, member.name, "would land outside the target directory")
        parent = posixpath.dirname(name.rstrip("/"))
        if parent not in directories:
            directories.add(parent)
            found.append(Place(member.name, posixpath.join(target, parent), link=False))
        if member.kind == "h" and member.link is not None and _escapes(member.link.lstrip("/")):
            raise _outside(archive, member.name, "is a hard link to outside the target directory")
        if member.kind == "l" and member.link is not None:
            here = posixpath.join(target, parent)
            destination = posixpath.normpath(posixpath.join(here, member.link))
            found.append(Place(member.name, destination, link=True))
    return found


def judge(
    archive: str,
    target: str,
    reached: list[Place],
    resolved: list[str],
    inside: Callable[[str], bool],
) -> None:
    """Refuse the archive if a resolved place is outside where it may be."""
    for place, real in zip(reached, resolved, strict=True):
        if place.link and not inside(real):
            raise _outside(
                archive, place.member, f"is a link leading outside the filesystems ({real!r})"
            )
        if not place.link and not (real == target or real.startswith(target.rstrip("/") + "/")):
            raise _outside(
                archive, place.member, f"would land outside the target directory ({real!r})"
            )


def tar_failed(argv: Sequence[str], result: Output) -> None:
    """Raise tar's failure; one the cluster's words do not classify is the archive's fault.

    ("not in gzip format", "This does not look like a tar archive":
    FAILED_PRECONDITION, HTTP 400, with tar's own message, not an internal error.)
    """
    error = command_error(argv, result)
    if error.code != ErrorKind.INTERNAL:
        raise error
    message = result.stderr.decode(errors="replace").strip() or error.message
    raise ServiceError(ErrorKind.FAILED_PRECONDITION, message, "TAR_FAILED")


# The listing step: the archive opened and checked, the target's real place
# printed (NUL-terminated), then tar's listing of what fd 3 holds.
_LIST = """
exec 3<"$1" || exit 1
held 3 1
r=$(realpath -e -- "$2") || exit 1
inside "$r" 2
[ -d "$r" ] || { printf '%s: Not a directory\\n' "$2" >&2; exit 1; }
printf '%s\\0' "$r"
shift 2
exec tar "$@" -f - <&3
"""


async def check(
    run: RunWithInput, confine: Confine, source: str, target: str, flags: Sequence[str]
) -> None:
    """Refuse to extract ``source`` into ``target`` if the archive would reach outside.

    Two commands as the caller: tar's listing (archive and target checked
    where they lead), then one ``realpath -m`` of every place it reaches.
    """
    await confine.learn_roots_by_command(run)
    argv = ["sh", "-c", confine.script(_LIST), "tar", source, target, *LIST_OPTIONS, *flags]
    listed = await run(argv)
    confine.outcome([source, target], listed.exit_status, listed.stderr)
    if listed.exit_status != 0:
        tar_failed(["tar", *argv[1:]], listed)
    first, _, listing = listed.stdout.partition(b"\0")
    real_target = first.decode("utf-8", "surrogateescape")
    reached = places(source, real_target, parse_listing(listing))
    if not reached:
        return
    resolve = ["xargs", "-0r", "realpath", "-z", "-m", "--"]
    names = b"".join(place.path.encode("utf-8", "surrogateescape") + b"\0" for place in reached)
    resolved = checked(resolve, await run(resolve, stdin=names))
    reals = [r.decode("utf-8", "surrogateescape") for r in resolved.split(b"\0")[:-1]]
    judge(source, real_target, reached, reals, confine.inside)
