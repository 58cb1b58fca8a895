"""FirecREST's operations that change the filesystem: chmod, chown, mkdir, symlink, rm,
and the archives (compress, extract), each run as the calling user.

SFTP where it has the operation (chmod, mkdir, symlink, rm of a file),
confined shell steps where it has not (chown by name, ``rm -r``, ``tar``).
Each reply that carries an entry lists it as ``ls -ld`` would.
"""

from __future__ import annotations

import contextlib
import posixpath
import stat as statmod
from collections.abc import AsyncIterator, Sequence

import asyncssh

from hpcgate.server.errors import ErrorKind, ServiceError, invalid_argument
from hpcgate.server.filesystem import archive
from hpcgate.server.filesystem.entries import FileEntry
from hpcgate.server.filesystem.listing import single_entry
from hpcgate.server.filesystem.parse import owner_spec, parse_mode, tar_compression
from hpcgate.server.filesystem.remote import Remote
from hpcgate.server.ssh import CommandResult


async def chmod(remote: Remote, path: str, mode: str) -> FileEntry:
    """Set the permission bits of ``path`` (of a link's target, as chmod(1) does)."""
    bits = parse_mode(mode)
    async with remote.sftp(path) as client:
        await client.chmod(await remote.confine.resolve(client, path), bits)
        return await single_entry(remote, client, path)


async def chown(remote: Remote, path: str, owner: str, group: str) -> FileEntry:
    """``chown OWNER:GROUP`` as the caller: the cluster decides whether it may."""
    spec = owner_spec(owner, group)
    # Where the path leads, entered and changed there without following a last link.
    await remote.confined("chown", 'to "$2" 1; exec chown -h -- "$1" "$b"', [path], [spec, path])
    async with remote.sftp(path) as client:
        return await single_entry(remote, client, path)


async def _kind(client: asyncssh.SFTPClient, path: str, follow: bool = False) -> int | None:
    """The file type bits of ``path``, or None if it does not exist (or is unreachable)."""
    try:
        attrs = await (client.stat(path) if follow else client.lstat(path))
    except asyncssh.SFTPError:
        return None
    return statmod.S_IFMT(attrs.permissions or 0)


async def _creation_failed(client: asyncssh.SFTPClient, path: str) -> ServiceError | None:
    """Why creating ``path`` failed, where SFTP v3's codes do not say it.

    sftp-server answers EEXIST with the generic FX_FAILURE and ENOTDIR with
    FX_NO_SUCH_FILE; look at the path and its parent to give mkdir(1)'s
    words. None when neither explains the failure.
    """
    if await _kind(client, path) is not None:
        return ServiceError(
            ErrorKind.ALREADY_EXISTS,
            f"{path}: File exists",
            "ALREADY_EXISTS",
            metadata={"path": path},
        )
    parent = posixpath.dirname(path)
    kind = await _kind(client, parent, follow=True)
    if kind is not None and kind != statmod.S_IFDIR:
        return ServiceError(
            ErrorKind.INVALID_ARGUMENT,
            f"{path}: Not a directory",
            "NOT_A_DIRECTORY",
            metadata={"path": path},
        )
    return None


@contextlib.asynccontextmanager
async def _creating(client: asyncssh.SFTPClient, path: str) -> AsyncIterator[None]:
    """Around an SFTP request that creates ``path``: explain FX_FAILURE and FX_NO_SUCH_FILE."""
    try:
        yield
    except (asyncssh.SFTPFailure, asyncssh.SFTPNoSuchFile) as error:
        reason = await _creation_failed(client, path)
        if reason is None:
            raise
        raise reason from error


async def _mkdir(client: asyncssh.SFTPClient, path: str, parent: bool) -> None:
    """mkdir, or ``mkdir -p`` with ``parent`` (an existing directory is then fine)."""
    if parent:
        if await _kind(client, path, follow=True) == statmod.S_IFDIR:
            return
        above = posixpath.dirname(path)
        if above != path and await _kind(client, above, follow=True) is None:
            await _mkdir(client, above, parent=True)
    async with _creating(client, path):
        try:
            await client.mkdir(path)
        except asyncssh.SFTPFailure:
            # Made meanwhile by someone else: fine for mkdir -p.
            if not parent or await _kind(client, path, follow=True) != statmod.S_IFDIR:
                raise


async def mkdir(remote: Remote, path: str, parent: bool) -> FileEntry:
    """Create a directory (and its missing parents with ``parent``)."""
    async with remote.sftp(path) as client:
        await _mkdir(client, await remote.confine.resolve_loose(client, path), parent)
        return await single_entry(remote, client, path)


async def symlink(remote: Remote, target: str, link: str) -> FileEntry:
    """Create ``link`` pointing at ``target`` (which need not exist, but must lead inside)."""
    async with remote.sftp(link) as client:
        real_link = await remote.confine.resolve_entry(client, link)
        await remote.confine.resolve_loose(client, target)
        async with _creating(client, real_link):
            await client.symlink(target, real_link)
        return await single_entry(remote, client, link)


async def rm(remote: Remote, path: str, roots: Sequence[str]) -> None:
    """Delete a file or link (SFTP), or a directory tree (``rm -r``).

    A configured filesystem's root (in ``roots``) is never deleted.
    """
    if path.rstrip("/") in {r.rstrip("/") or "/" for r in roots}:
        raise invalid_argument("path", f"{path!r} is a filesystem root", "PATH_IS_ROOT")
    async with remote.sftp(path) as client:
        real = await remote.confine.resolve_entry(client, path)
        attrs = await client.lstat(real)
        if not statmod.S_ISDIR(attrs.permissions or 0):
            await client.remove(real)
            return
    await remote.confined("rm", 'at "$1" 1; exec rm -r -- "$b"', [path], [path])


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
cd -P -- "$b" || exit 1
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
