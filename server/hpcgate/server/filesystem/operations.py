"""FirecREST's operations that change the filesystem: chmod, chown, mkdir, symlink, rm,
and the archives (compress, extract), each run as the calling user.

Each is one confined shell step (:mod:`.confine`): the real place entered
and checked inside, then the act on a bare name there, or through an open
fd, in the same command, so that nothing swapped in after the check is
followed. Each reply that carries an entry lists it as ``ls -ld`` would.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument
from hpcgate.server.filesystem import archive
from hpcgate.server.filesystem.confine import CHANGED_EXIT, UNSAFE_EXIT
from hpcgate.server.filesystem.entries import FileEntry
from hpcgate.server.filesystem.errors import step_error
from hpcgate.server.filesystem.listing import single_entry
from hpcgate.server.filesystem.parse import owner_spec, parse_mode, tar_compression
from hpcgate.server.filesystem.remote import Remote
from hpcgate.server.ssh import CommandResult

# chmod: the real place entered (links followed, as chmod(1) does), then the
# mode changed through something held, so that a name swapped for a link
# after the check is never followed: a directory that can be entered is
# changed as ".", a readable file or directory through its open fd (the
# C library's chmod of /proc/self/fd/3 reaches the open inode). What can be
# neither opened nor entered goes by its name only where no one but the
# caller and root may replace that name (see the module docstring); a name
# the caller does not own fails as chmod(2) would, EPERM. $1 path, $2 mode.
_CHMOD = f"""
to "$1" 1
here=${{PWD%/}}/$b
[ -L "$b" ] && exit {CHANGED_EXIT}
if [ -d "$b" ] && [ -x "$b" ]; then
    cd -P -- "$b" 2>/dev/null || exit {CHANGED_EXIT}
    [ "$PWD" = "$here" ] || {{ inside "$PWD" 1; exit {CHANGED_EXIT}; }}
    exec chmod -- "$2" .
fi
if [ -r "$b" ] && {{ [ -f "$b" ] || [ -d "$b" ]; }}; then
    exec 3<"$b" || exit 1
    r=$(readlink -n -e /proc/self/fd/3 && echo .) || exit 1
    r=${{r%.}}
    [ "$r" = "$here" ] || {{ inside "$r" 1; exit {CHANGED_EXIT}; }}
    exec chmod -- "$2" /proc/self/fd/3
fi
[ -e "$b" ] || {{ printf '%s: No such file or directory\\n' "$1" >&2; exit 1; }}
[ -O "$b" ] || {{ printf '%s: Operation not permitted\\n' "$1" >&2; exit 1; }}
set -- "$1" "$2" $(stat -c '%u %a' .) "$(id -u)"
[ "$3" = "$5" ] || [ "$3" = 0 ] || exit {UNSAFE_EXIT}
[ $((0$4 & 022)) = 0 ] || [ $((0$4 & 01000)) != 0 ] || exit {UNSAFE_EXIT}
[ -L "$b" ] && exit {CHANGED_EXIT}
exec chmod -- "$2" "$b"
"""


async def chmod(remote: Remote, path: str, mode: str) -> FileEntry:
    """``chmod MODE`` of what ``path`` leads to (a link's target, as chmod(1) does).

    The mode text goes to chmod(1) as given (validated octal), so its rules
    hold: a directory's set-user-ID and set-group-ID bits stay unless the
    mode names them, FirecREST's behaviour.
    """
    parse_mode(mode)
    _, result = await remote.confined_unchecked("chmod", _CHMOD, [path], [path, mode])
    if result.exit_status == UNSAFE_EXIT:
        raise ServiceError(
            ErrorKind.FAILED_PRECONDITION,
            f"{path}: the caller can neither read nor enter it, and users other than the"
            " caller may replace names in its directory: its mode cannot be changed without"
            " the risk of following a link swapped in (change it over SSH)",
            "PATH_NOT_HELD",
            metadata={"path": path},
        )
    if result.exit_status != 0:
        raise step_error(result, path)
    async with remote.sftp(path) as client:
        return await single_entry(remote, client, path)


async def chown(remote: Remote, path: str, owner: str, group: str) -> FileEntry:
    """``chown OWNER:GROUP`` as the caller: the cluster decides whether it may."""
    spec = owner_spec(owner, group)
    # Where the path leads, entered and changed there without following a last link.
    await remote.confined("chown", 'to "$2" 1; exec chown -h -- "$1" "$b"', [path], [spec, path])
    async with remote.sftp(path) as client:
        return await single_entry(remote, client, path)


async def _step(remote: Remote, name: str, body: str, paths: Sequence[str], shown: str) -> None:
    """Run the confined step ``body`` over ``paths``; a failure is told about ``shown``."""
    _, result = await remote.confined_unchecked(name, body, paths, paths)
    if result.exit_status != 0:
        raise step_error(result, shown)


# mkdir -p: an existing directory is fine (if inside). Else the deepest
# existing ancestor is entered and checked, then each missing component made
# by its bare name in the held, checked directory, entered, and checked
# again: every directory made lands inside, whatever is swapped meanwhile.
# $1 the path.
_MKDIR_PARENTS = f"""
p=$1 rest=
while [ ! -e "$p" ] && [ ! -L "$p" ]; do
    rest=${{p##*/}}${{rest:+/$rest}}
    p=${{p%/*}}
    p=${{p:-/}}
done
if [ -z "$rest" ]; then
    [ -d "$p" ] || {{ printf '%s: File exists\\n' "$1" >&2; exit 1; }}
    r=$(realpath -e -- "$p") || exit 1
    inside "$r" 1
    exit 0
fi
if ! cd -P -- "$p" 2>/dev/null; then
    stat -c "" -- "$p/." >/dev/null || exit 1
    exit {CHANGED_EXIT}
fi
inside "$PWD" 1
here=${{PWD%/}}
IFS=/
set -f
for c in $rest; do
    e=$(mkdir -- "$c" 2>&1) || [ -d "$c" ] || {{ printf '%s\\n' "$e" >&2; exit 1; }}
    cd -P -- "$c" 2>/dev/null || exit {CHANGED_EXIT}
    here=$here/$c
    [ "$PWD" = "$here" ] || {{ inside "$PWD" 1; exit {CHANGED_EXIT}; }}
done
"""


async def mkdir(remote: Remote, path: str, parent: bool) -> FileEntry:
    """Create a directory (and its missing parents with ``parent``), as mkdir(1) would.

    Made by its bare name in its real parent, entered and checked inside
    in the same step: a directory on the path swapped for a link meanwhile
    makes nothing outside.
    """
    body = _MKDIR_PARENTS if parent else 'at "$1" 1; exec mkdir -- "$b"'
    await _step(remote, "mkdir", body, [path], path)
    async with remote.sftp(path) as client:
        return await single_entry(remote, client, path)


# The target judged where it would lead (it need not exist), the link made by
# its bare name in its real, checked parent; -T: never inside a directory of
# that name. $1 target, $2 link.
_SYMLINK = """
t=$(realpath -m -- "$1") || exit 1
inside "$t" 1
at "$2" 2
exec ln -s -T -- "$1" "$b"
"""


async def symlink(remote: Remote, target: str, link: str) -> FileEntry:
    """Create ``link`` pointing at ``target`` (which need not exist, but must lead inside)."""
    await _step(remote, "ln", _SYMLINK, [target, link], link)
    async with remote.sftp(link) as client:
        return await single_entry(remote, client, link)


async def rm(remote: Remote, path: str, roots: Sequence[str]) -> None:
    """Delete a file, a link (not what it leads to) or a directory tree: ``rm -r``.

    By its bare name in its real, checked parent; rm never follows a link.
    A configured filesystem's root (in ``roots``) is never deleted.
    """
    if path.rstrip("/") in {r.rstrip("/") or "/" for r in roots}:
        raise invalid_argument("path", f"{path!r} is a filesystem root", "PATH_IS_ROOT")
    await _step(remote, "rm", 'at "$1" 1; exec rm -r -- "$b"', [path], path)


# -- archives --------------------------------------------------------------------------


async def _tar(
    remote: Remote,
    body: str,
    paths: Sequence[str],
    args: Sequence[str],
    stdin: bytes | None = None,
) -> None:
    """Run a confined tar step; its failure as :func:`.archive.tar_failed` says."""
    argv, result = await remote.confined_unchecked("tar", body, paths, args, stdin)
    if result.exit_status != 0:
        archive.tar_failed(argv, result)


# The compress step: the source's real parent entered and checked (and, with
# dereference, every place tar would follow to), then the archive opened and
# checked, then tar run there on the bare name. $1 source, $2 target, $3
# dereference (0/1), $4 the ERE of the places inside, $5 "tree" or "list"
# (names on stdin); the rest are tar's options.
_COMPRESS = r"""
at "$1" 1
if [ "$3" = 1 ]; then
    far=$(find -L "$b" -print0 2>/dev/null | xargs -0r realpath -z -m -- \
        | grep -z -v -m 1 -E -e "$4" | tr -d '\000')
    [ -z "$far" ] || inside "$far" 1
fi
t=$(realpath -m -- "$2") || exit 1
inside "$t" 2
[ -L "$t" ] && exit 95
exec 4>"$t" || exit 1
held 4 2
mode=$5
shift 5
if [ "$mode" = tree ]; then
    exec tar -c "$@" -f - -- "$b" >&4
fi
exec tar -c "$@" -f - --null --verbatim-files-from --no-recursion -T - >&4
"""


async def compress(
    remote: Remote,
    source: str,
    target: str,
    *,
    match_pattern: str | None,
    dereference: bool,
    compression: str,
) -> None:
    """``tar -c`` of ``source`` into ``target``; members are named from source's parent.

    With ``match_pattern`` only regular files whose absolute path matches it
    (``find -regex``, emacs syntax, whole path) are archived: ``find`` lists
    them, and tar reads the list (NUL-separated, verbatim) from its stdin.
    Source, target and (with ``dereference``) every place tar would follow
    a link to must be inside the filesystems; else nothing is written.
    """
    flags = tar_compression(compression)
    async with remote.sftp(source) as client:
        await client.lstat(source)  # a missing source is NOT_FOUND, not an empty archive
    base = posixpath.basename(source)
    follow = ["--dereference"] if dereference else []
    args = [source, target, "1" if dereference else "0", remote.confine.ere()]
    paths = [source, target]
    if not match_pattern:
        await _tar(remote, _COMPRESS, paths, [*args, "tree", *flags, *follow])
        return
    find = ["find", *(["-L"] if dereference else []), source, "-type", "f"]
    listed = await remote.run([*find, "-regex", match_pattern, "-printf", "%P\\0"])
    members = b"".join(
        (f"{base}/".encode() + rel if rel else base.encode()) + b"\0"
        for rel in listed.split(b"\0")[:-1]
    )
    await _tar(remote, _COMPRESS, paths, [*args, "list", *flags, *follow], members)


# The extraction step: archive opened and checked, target directory entered
# and checked, tar extracting there from fd 3.
_EXTRACT = """
exec 3<"$1" || exit 1
held 3 1
to "$2" 2
cd -P -- "$b" 2>/dev/null || exit {CHANGED_EXIT}
inside "$PWD" 2
shift 2
exec tar -x "$@" -f - <&3
"""


async def extract(remote: Remote, source: str, target: str, compression: str) -> None:
    """``tar -x`` of the archive ``source`` into the existing directory ``target``.

    tar's own listing is judged first (:mod:`.archive`): no member may land
    outside the target, and no link it makes may lead outside the
    filesystems; the places it reaches are resolved in one ``realpath -m``.
    """
    flags = tar_compression(compression)

    async def run(argv: Sequence[str], *, stdin: bytes | None = None) -> CommandResult:
        return await remote.run_unchecked(argv, stdin)

    await archive.check(run, remote.confine, source, target, flags)
    paths = [source, target]
    await _tar(remote, _EXTRACT, paths, [source, target, *flags])
