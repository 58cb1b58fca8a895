"""What a file is: ``stat``, its SHA-256 checksum, and what ``file`` says of it.

Each runs as one confined shell step on the cluster (see :mod:`.confine`):
SFTP v3 carries no inode, device, link count or ctime, and hashing here
would pull the whole file over the wire.
"""

from __future__ import annotations

from dataclasses import replace

from hpcgate.server.filesystem.errors import command_error
from hpcgate.server.filesystem.parse import STAT_FORMAT, FileStat, parse_sha256sum, parse_stat
from hpcgate.server.filesystem.ranges import regular_size
from hpcgate.server.filesystem.remote import Remote


async def checksum(remote: Remote, path: str) -> str:
    """SHA-256 of a regular file, computed on the cluster (``sha256sum``) from a held fd."""
    async with remote.sftp(path) as client:
        # A FIFO would hang the open until the timeout.
        regular_size((await remote.confine.resolved_stat(client, path))[1], path)
    body = 'exec 3<"$1" || exit 1; held 3 1; exec sha256sum <&3'
    return parse_sha256sum(await remote.confined("sha256sum", body, [path], [path]))


async def file_type(remote: Remote, path: str) -> str:
    """What ``file -b`` says about ``path`` (a link is described as a link, as file(1) does).

    With ``-E`` an unreadable or missing file is an error rather than a
    description; ``file`` prints that error on stdout, so stdout is the message.
    """
    body = 'at "$1" 1; exec file -b -E -h -- "$b"'
    argv, result = await remote.confined_unchecked("file", body, [path], [path])
    if result.exit_status != 0:
        raise command_error(argv, replace(result, stderr=result.stdout + result.stderr))
    return result.stdout.decode(errors="replace").strip()


async def stat(remote: Remote, path: str, dereference: bool) -> FileStat:
    """``os.stat_result`` of ``path`` (of the link's target with ``dereference``).

    The name is stat'ed inside its real directory without following a last
    link: with ``dereference`` that name is where every link led.
    """
    body = f'{"to" if dereference else "at"} "$1" 1; exec stat -c "$2" -- "$b"'
    return parse_stat(await remote.confined("stat", body, [path], [path, STAT_FORMAT]))
