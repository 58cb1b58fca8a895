"""mkdir, symlink, chmod and rm check and act in one remote step: nothing lands outside in a race.

Each operation is one confined shell step (:mod:`hpcgate.server.filesystem.operations`):
the real parent entered and checked, then the act on a bare name there or
through an open fd. The race of issue 14 is run for real: a process of
alice's on the cluster flips her directory ``d`` between a real directory
and a link to a directory of hers under /tmp, as fast as it can, while
hpcgate repeats the operation through ``d``. Each answer may be a success
(the flip had ``d`` real), a refusal or NOT_FOUND (it had the link, or
nothing); afterwards the outside directory must be exactly as it was. The
old SFTP path (resolve, then act on the resolved path) failed this: an
act after the resolve went through the link.

The chmod paths that hold nothing (a file the caller can neither read nor
enter) are shown by their conditions, not raced: they act by name only
where nobody but the caller could make the swap.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import grpc
import httpx
import pytest
from integration.test_paths_confine import alice, batching
from prometheus_client import REGISTRY

from conftest import LiveService
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

pytestmark = pytest.mark.asyncio
# test_paths_confine's alice (her SSH login) and service that batches every read.
__all__ = ["alice", "batching"]

# Requests per raced operation.
ROUNDS = 60
# Swaps d, atomically (renameat2 RENAME_EXCHANGE), with a link to the
# outside directory, until the file "stop" appears (or, should the test die,
# for at most a minute): d is always there, a directory or the link.
_FLIPPER = r"""
import ctypes, os, sys, time
work, out = sys.argv[1:]
os.chdir(work)
os.symlink(out, "d.link")
exchange = ctypes.CDLL(None, use_errno=True).renameat2
end = time.monotonic() + 60
while time.monotonic() < end and not os.path.exists("stop"):
    for _ in range(100):
        if exchange(-100, b"d", -100, b"d.link", 2) != 0:
            sys.exit(f"renameat2: {os.strerror(ctypes.get_errno())}")
"""
# Every entry below the directory with its type, mode and link target, sorted.
_SNAPSHOT = r"""cd -- "$1" && find . -printf '%p %y %m %l\n' | LC_ALL=C sort"""
# What an answer during the race may be: done, or refused, or not there.
_EXPECTED = {200, 201, 204, 400, 404, 409}


@dataclass
class Flip:
    """alice's work directory holding the directory ``d``, and the outside one."""

    conn: asyncssh.SSHClientConnection
    work: str
    outside: str

    async def sh(self, script: str, *args: str) -> str:
        argv = ["sh", "-c", script, "sh", self.work, self.outside, *args]
        result = await self.conn.run(shlex.join(argv))
        assert result.exit_status == 0, result.stderr
        return str(result.stdout)

    async def outside_state(self) -> str:
        return await self.sh(_SNAPSHOT.replace("$1", "$2"))

    @property
    def d(self) -> str:
        return f"{self.work}/d"


@pytest.fixture
async def flip(alice: asyncssh.SSHClientConnection) -> AsyncIterator[Flip]:
    tag = uuid.uuid4().hex[:10]
    found = Flip(alice, f"/home/alice/steps-{tag}", f"/tmp/hpcgate-steps-{tag}")
    await found.sh('mkdir -m 700 -- "$1" "$1/d" "$2"')
    try:
        yield found
    finally:
        await found.sh('rm -rf -- "$1" "$2"')


@pytest.fixture(scope="module")
async def http(live: LiveService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{live.rest_url}/filesystem/{SYSTEM}/ops",
        headers=live.headers("alice"),
        timeout=60,
    ) as client:
        yield client


async def race(flip: Flip, request: Any) -> dict[int, int]:
    """Run ``request(i)`` ROUNDS times while d flips; the count of each status."""
    flipper = await flip.conn.create_process(
        shlex.join(["python3", "-c", _FLIPPER, flip.work, flip.outside])
    )
    statuses: dict[int, int] = {}
    try:
        await asyncio.sleep(0.05)
        for i in range(ROUNDS):
            reply: httpx.Response = await request(i)
            assert reply.status_code in _EXPECTED, reply.text
            if reply.status_code == 400:
                assert reply.json()["data"]["reason"] == "PATH_OUTSIDE_FILESYSTEMS", reply.text
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
    finally:
        await flip.sh('touch -- "$1/stop"')
        done = await asyncio.wait_for(flipper.wait(), 30)
    assert done.exit_status == 0, done.stderr
    # Leave d the real directory, whichever way the last exchange left it.
    await flip.sh(
        'cd -- "$1" && if [ -L d ]; then mv -T d.link d.real && mv -T d d.link'
        " && mv -T d.real d; fi && rm -- d.link"
    )
    print(f"race outcomes: {statuses}")  # shown with -s: the race was run both ways
    return statuses


def _done(statuses: dict[int, int]) -> int:
    return sum(n for status, n in statuses.items() if status < 300)


async def test_mkdir_lands_nothing_outside_in_a_race(http: httpx.AsyncClient, flip: Flip) -> None:
    before = await flip.outside_state()

    async def request(i: int) -> httpx.Response:
        if i % 2:
            return await http.post("mkdir", json={"path": f"{flip.d}/m{i}"})
        return await http.post("mkdir", json={"path": f"{flip.d}/p{i}/a/b", "parent": True})

    statuses = await race(flip, request)
    assert await flip.outside_state() == before, statuses
    made = await flip.sh('cd -- "$1/d" && ls -A')
    # Each success made its directory inside (and a failure may be the reply's
    # listing of it, through d, racing the flip too).
    assert len(made.split()) >= _done(statuses)


async def test_symlink_lands_nothing_outside_in_a_race(http: httpx.AsyncClient, flip: Flip) -> None:
    before = await flip.outside_state()

    async def request(i: int) -> httpx.Response:
        return await http.post("symlink", json={"path": flip.work, "linkPath": f"{flip.d}/l{i}"})

    statuses = await race(flip, request)
    assert await flip.outside_state() == before, statuses
    assert len((await flip.sh('cd -- "$1/d" && ls -A')).split()) >= _done(statuses)


async def test_rm_removes_nothing_outside_in_a_race(http: httpx.AsyncClient, flip: Flip) -> None:
    names = " ".join(f"r{i}" for i in range(ROUNDS))
    await flip.sh(f'cd -- "$1/d" && touch {names} && cd -- "$2" && touch {names}')
    before = await flip.outside_state()

    async def request(i: int) -> httpx.Response:
        return await http.delete("rm", params={"path": f"{flip.d}/r{i}"})

    statuses = await race(flip, request)
    assert await flip.outside_state() == before, statuses
    left = (await flip.sh('cd -- "$1/d" && ls -A')).split()
    assert len(left) == ROUNDS - _done(statuses)  # rm answers nothing after the act


async def test_chmod_changes_nothing_outside_in_a_race(http: httpx.AsyncClient, flip: Flip) -> None:
    # A file and a directory on each side: the fd way and the "." way.
    await flip.sh('for w in "$1/d" "$2"; do touch "$w/f" && mkdir "$w/s" && chmod 644 "$w/f"; done')
    before = await flip.outside_state()

    async def request(i: int) -> httpx.Response:
        name, mode = ("f", "600") if i % 2 else ("s", "700")
        return await http.put("chmod", json={"path": f"{flip.d}/{name}", "mode": mode})

    statuses = await race(flip, request)
    assert await flip.outside_state() == before, statuses
    if _done(statuses):
        assert await flip.sh('stat -c %a -- "$1/d/f" "$1/d/s"') in {
            "600\n755\n",
            "644\n700\n",
            "600\n700\n",
        }


# -- chmod's cases, one by one ----------------------------------------------------------


async def test_chmod_of_what_cannot_be_opened_in_the_callers_own_directory(
    http: httpx.AsyncClient, flip: Flip
) -> None:
    await flip.sh(
        'cd -- "$1/d" && touch locked && chmod 000 locked && mkdir shut && chmod 000 shut'
        ' && mkdir listable && chmod 400 listable && printf x > "ends-in-newline\n"'
    )
    for name, mode, shown in [
        ("locked", "640", "rw-r-----"),
        ("shut", "750", "rwxr-x---"),
        ("listable", "700", "rwx------"),
        ("ends-in-newline\n", "604", "rw----r--"),
    ]:
        reply = await http.put("chmod", json={"path": f"{flip.d}/{name}", "mode": mode})
        assert reply.status_code == 200, reply.text
        assert reply.json()["output"]["permissions"] == shown


async def test_chmod_of_an_unopenable_file_where_others_may_swap_names_is_refused(
    http: httpx.AsyncClient, flip: Flip
) -> None:
    await flip.sh('cd -- "$1/d" && touch locked && chmod 000 locked && chmod 773 .')
    reply = await http.put("chmod", json={"path": f"{flip.d}/locked", "mode": "600"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["data"]["reason"] == "PATH_NOT_HELD"
    assert await flip.sh('stat -c %a -- "$1/d/locked"') == "0\n"
    # A sticky directory keeps others from replacing alice's names: that goes.
    await flip.sh('chmod 1773 -- "$1/d"')
    reply = await http.put("chmod", json={"path": f"{flip.d}/locked", "mode": "600"})
    assert reply.status_code == 200, reply.text
    assert await flip.sh('stat -c %a -- "$1/d/locked"') == "600\n"


async def test_chmod_keeps_a_directorys_setgid_bit_as_chmod_does(
    http: httpx.AsyncClient, flip: Flip
) -> None:
    await flip.sh('chmod 2750 -- "$1/d"')
    reply = await http.put("chmod", json={"path": flip.d, "mode": "700"})
    assert reply.status_code == 200, reply.text
    assert await flip.sh('stat -c %a -- "$1/d"') == "2700\n"


async def test_mkdir_parent_reports_in_mkdirs_words(http: httpx.AsyncClient, flip: Flip) -> None:
    await flip.sh('touch -- "$1/d/file"')
    over = await http.post("mkdir", json={"path": f"{flip.d}/file", "parent": True})
    assert (over.status_code, over.json()["data"]["reason"]) == (400, "ALREADY_EXISTS")
    under = await http.post("mkdir", json={"path": f"{flip.d}/file/a/b", "parent": True})
    assert (under.status_code, under.json()["data"]["reason"]) == (400, "NOT_A_DIRECTORY")
    assert f"{flip.d}/file/a/b: Not a directory" in under.text
    await flip.sh('chmod 500 -- "$1/d"')
    denied = await http.post("mkdir", json={"path": f"{flip.d}/x/y", "parent": True})
    assert (denied.status_code, denied.json()["data"]["reason"]) == (403, "PERMISSION_DENIED")
    await flip.sh('chmod 700 -- "$1/d"')
    through = await http.post("mkdir", json={"path": f"{flip.d}/x/y", "parent": True})
    assert through.status_code == 201, through.text
    assert await flip.sh('ls -A -- "$1/d/x"') == "y\n"


# -- batches: small-file reads and the bulk download ---------------------------------------

INSIDE, OUTSIDE = b"inside\n", b"OUTSIDE: must never be read\n"


async def _downloads_in_a_race(flip: Flip, stub: Any, metadata: Any) -> set[bytes]:
    """ROUNDS rounds of 16 concurrent downloads of d/f while d flips; the contents returned."""
    seen: set[bytes] = set()

    async def download() -> None:
        request = filesystem_pb2.DownloadRequest(system_name=SYSTEM, path=f"{flip.d}/f")
        try:
            seen.add((await stub.Download(request, metadata=metadata, timeout=30)).data)
        except grpc.aio.AioRpcError as error:
            # A read that fell back to SFTP may meet the swap inside
            # sftp-server's realpath: PATH_CHANGED (ABORTED), nothing read.
            assert error.code() in _REFUSED, error

    async def rounds(i: int) -> httpx.Response:
        await asyncio.gather(*(download() for _ in range(16)))
        return httpx.Response(200)

    await race(flip, rounds)
    return seen


def _batched() -> float:
    labels = {"system": SYSTEM, "route": "batched"}
    return REGISTRY.get_sample_value("hpcgate_filesystem_small_reads_total", labels) or 0.0


async def _inside_and_outside(flip: Flip) -> None:
    """d/f inside, and f in the outside directory the link leads to."""
    await flip.sh(
        'printf %s "$3" > "$1/d/f" && printf %s "$4" > "$2/f"',
        *(INSIDE + OUTSIDE).decode().splitlines(keepends=True),
    )


_REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,  # leads outside
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ABORTED,  # changed
}


async def test_a_read_batch_reads_nothing_outside_in_a_race(
    batching: LiveService, flip: Flip
) -> None:
    await _inside_and_outside(flip)
    stub = filesystem_pb2_grpc.FilesystemStub(batching.channel)
    before = _batched()
    seen = await _downloads_in_a_race(flip, stub, batching.metadata("alice"))
    assert OUTSIDE not in seen
    assert INSIDE in seen
    assert _batched() > before  # the reads did go through batches


@pytest.mark.parametrize("mode", ["700", "311"], ids=["held-by-fd", "held-by-process"])
async def test_a_bulk_download_reads_nothing_outside_in_a_race(
    live: LiveService, flip: Flip, mode: str
) -> None:
    """311: both directories can be entered, not read; a holder process's cwd holds them."""
    await _inside_and_outside(flip)
    await flip.sh('chmod "$3" -- "$1/d" "$2"', mode)
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    request = filesystem_pb2.BulkDownloadRequest(
        system_name=SYSTEM, files=filesystem_pb2.BulkDownloadFiles(paths=[f"{flip.d}/f"] * 20)
    )
    seen: set[bytes] = set()

    async def bulk(i: int) -> httpx.Response:
        data: dict[int, bytes] = {}
        async for reply in stub.BulkDownload(request, metadata=live.metadata("alice")):
            for entry in reply.entries:
                if entry.WhichOneof("kind") == "chunk":
                    data[entry.file_index] = data.get(entry.file_index, b"") + entry.chunk
                elif entry.WhichOneof("kind") == "header":
                    data.setdefault(entry.file_index, b"")
        seen.update(data.values())
        return httpx.Response(200)

    try:
        await race(flip, bulk)
    finally:
        await flip.sh('chmod 700 -- "$1/d" "$2"')
    assert OUTSIDE not in seen
    assert INSIDE in seen


async def test_batches_read_in_a_directory_that_can_be_entered_but_not_read(
    live: LiveService, batching: LiveService, flip: Flip
) -> None:
    """Such a directory cannot be opened (that needs read permission): a process holds it."""
    await flip.sh('printf shared > "$1/d/f" && chmod 311 -- "$1/d"')
    try:
        paths = [f"{flip.d}/f", f"{flip.d}/missing"]
        request = filesystem_pb2.BulkDownloadRequest(
            system_name=SYSTEM, files=filesystem_pb2.BulkDownloadFiles(paths=paths)
        )
        stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
        data, errors = b"", []
        async for reply in stub.BulkDownload(request, metadata=live.metadata("alice")):
            for entry in reply.entries:
                data += entry.chunk
                if entry.WhichOneof("kind") == "error":
                    errors.append((entry.file_index, entry.error.message))
        assert data == b"shared"
        assert errors == [(1, f"{flip.d}/missing: Cannot stat: No such file or directory")]
        batched = filesystem_pb2_grpc.FilesystemStub(batching.channel)
        download = filesystem_pb2.DownloadRequest(system_name=SYSTEM, path=f"{flip.d}/f")
        replies = await asyncio.gather(
            *(batched.Download(download, metadata=batching.metadata("alice")) for _ in range(8))
        )
        assert {reply.data for reply in replies} == {b"shared"}
    finally:
        await flip.sh('chmod 700 -- "$1/d"')
