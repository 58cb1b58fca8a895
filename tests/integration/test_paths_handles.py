"""SFTP opens are judged by where the handle leads: the race of issue 14 shown by its mechanism.

A race cannot be shown by timing, so each test does what the race needs in
an order it controls: the path is resolved (inside), then, as alice over
her own SSH login, a directory on it is swapped for a link leading out,
then the resolved path is opened through :mod:`hpcgate.server.filesystem.handles`
on alice's own sftp-server. The open must be refused and nothing written
outside. The fd model's recovery from a stale state is shown the same way.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import asyncssh
import pytest

from cluster_fixture import Cluster
from hpcgate.server.errors import ServiceError
from hpcgate.server.filesystem.atomic import AtomicWrite
from hpcgate.server.filesystem.confine import Confine
from hpcgate.server.filesystem.handles import model_of, opened

pytestmark = pytest.mark.asyncio

CONFINE = Confine("handles-test", ("/home", "/scratch"))


@dataclass
class Swap:
    """alice's directory ``work/d`` holding ``f``, and an outside directory to swap it for."""

    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    work: str
    outside: str

    @property
    def file(self) -> str:
        return f"{self.work}/d/f"

    async def run(self, script: str) -> str:
        argv = ["sh", "-c", script, "sh", self.work, self.outside]
        result = await self.conn.run(shlex.join(argv))
        assert result.exit_status == 0, result.stderr
        return str(result.stdout)

    async def swap_out(self) -> None:
        """Replace the directory ``d`` by a link to the outside directory."""
        await self.run('mv -- "$1/d" "$1/d.old" && ln -s -- "$2" "$1/d"')


async def _read(handle: asyncssh.SFTPClientFile) -> bytes:
    """The whole file (opened "rb": bytes, whatever asyncssh's stubs infer)."""
    return cast(bytes, await handle.read())


@pytest.fixture
async def swap(cluster: Cluster) -> AsyncIterator[Swap]:
    tag = uuid.uuid4().hex[:10]
    async with cluster.connect("alice") as conn, conn.start_sftp_client() as sftp:
        found = Swap(conn, sftp, f"/home/alice/handles-{tag}", f"/tmp/hpcgate-handles-{tag}")
        await found.run(
            'mkdir -m 700 -- "$1" "$1/d" "$2" && echo inside > "$1/d/f" && echo outside > "$2/f"'
        )
        try:
            yield found
        finally:
            await found.run('rm -rf -- "$1" "$2"')


async def test_a_read_is_refused_when_a_directory_is_swapped_after_the_resolve(
    swap: Swap,
) -> None:
    real = CONFINE.check(swap.file, await swap.sftp.realpath(swap.file))
    await swap.swap_out()
    with pytest.raises(ServiceError) as refused:
        async with opened(swap.sftp, CONFINE, real, swap.file) as handle:
            await handle.read()
    assert refused.value.reason == "PATH_OUTSIDE_FILESYSTEMS"
    assert swap.outside in refused.value.message


async def test_a_swap_to_another_place_inside_is_path_changed(swap: Swap) -> None:
    real = CONFINE.check(swap.file, await swap.sftp.realpath(swap.file))
    await swap.run('mkdir -- "$1/e" && echo other > "$1/e/f"')
    await swap.run('mv -- "$1/d" "$1/d.old" && ln -s e "$1/d"')
    with pytest.raises(ServiceError) as refused:
        async with opened(swap.sftp, CONFINE, real, swap.file):
            pass
    assert refused.value.reason == "PATH_CHANGED"


async def test_an_upload_is_refused_and_writes_nothing_outside_after_a_swap(swap: Swap) -> None:
    target = f"{swap.work}/d/new.txt"
    real = CONFINE.check(target, await swap.sftp.realpath(f"{swap.work}/d") + "/new.txt")
    await swap.swap_out()
    with pytest.raises(ServiceError) as refused:
        async with AtomicWrite(swap.sftp, real, shown=target, confine=CONFINE) as out:
            await out.write(b"must not land outside\n")
            await out.commit()
    assert refused.value.reason == "PATH_OUTSIDE_FILESYSTEMS"
    assert await swap.run('ls -A -- "$2"') == "f\n"  # no .part, no new.txt outside
    assert await swap.run('ls -A -- "$1/d.old"') == "f\n"


async def test_normal_reads_and_uploads_work_and_keep_the_model_true(swap: Swap) -> None:
    for _ in range(3):
        async with opened(swap.sftp, CONFINE, await swap.sftp.realpath(swap.file), swap.file) as h:
            assert await _read(h) == b"inside\n"
    taken = set(model_of(swap.sftp).taken or ())
    target = f"{swap.work}/d/up.txt"
    async with AtomicWrite(swap.sftp, target, shown=target, confine=CONFINE) as out:
        await out.write(b"uploaded\n")
        await out.commit()
    assert await swap.run('cat -- "$1/d/up.txt"') == "uploaded\n"
    assert model_of(swap.sftp).taken == taken  # every fd opened was closed again


async def test_a_stale_model_is_learned_again_not_refused(swap: Swap) -> None:
    real = await swap.sftp.realpath(swap.file)
    async with opened(swap.sftp, CONFINE, real, swap.file):
        pass
    model = model_of(swap.sftp)
    # An fd opened behind the model's back (as a listing's opendir would)...
    behind = await swap.sftp.open(f"{swap.work}/d.behind", "wb")
    try:
        async with opened(swap.sftp, CONFINE, real, swap.file) as handle:
            assert await _read(handle) == b"inside\n"
    finally:
        await behind.close()
    # ...and a model that is plainly wrong (claims nothing open).
    model.taken = set()
    async with opened(swap.sftp, CONFINE, real, swap.file) as handle:
        assert await _read(handle) == b"inside\n"
    assert model.taken and 0 in model.taken  # learned again: sftp-server holds its stdin
