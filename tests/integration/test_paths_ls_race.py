"""``ls`` never shows a directory outside, even one swapped in between the check and the read.

The race of issue 14 run for real, as in :mod:`integration.test_paths_steps`:
a process of alice's flips her directory ``d`` with a link to a directory
of hers under /tmp, as fast as it can, while hpcgate lists ``d`` (small:
over SFTP, :mod:`hpcgate.server.filesystem.helddir`), its parent
recursively, ``d`` dereferenced, and the file ``d/f`` itself. Both directories hold a file ``f``
(inside 6 bytes, outside 7,777) and a name of their own. Each answer may be
a listing of the real ``d``, a refusal or PATH_CHANGED, or NOT_FOUND;
never an outside name, nor the outside ``f``'s size. The previous
listing (resolve, then readdir of the resolved path) failed this: the
readdir went through the link, and sftp-server's lstat of each entry by
the handle's path did too.
"""

from __future__ import annotations

import grpc
import httpx
import pytest
from integration.test_paths_confine import alice
from integration.test_paths_steps import Flip, flip, race

from conftest import LiveService
from hpcgate.v1 import filesystem_pb2, filesystem_pb2_grpc
from localsite import SYSTEM

pytestmark = pytest.mark.asyncio
__all__ = ["alice", "flip"]

INSIDE_SIZE, OUTSIDE_SIZE = 6, 7777
_ARRANGE = (
    'head -c 6 /dev/zero > "$1/d/f" && touch "$1/d/in-only" && mkdir "$1/d/sub" &&'
    ' ln -s f "$1/d/lf" && head -c 7777 /dev/zero > "$2/f" && touch "$2/OUT-only" &&'
    ' mkdir "$2/sub" && touch "$2/sub/OUT-below" && ln -s f "$2/lf"'
)
# Refused (leads outside), not there, changed: what a listing in the race may meet.
_REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED}


@pytest.mark.parametrize("mode", ["plain", "recursive", "dereference", "file"])
async def test_ls_never_shows_the_outside_in_a_race(
    live: LiveService, flip: Flip, mode: str
) -> None:
    await flip.sh(_ARRANGE)
    stub = filesystem_pb2_grpc.FilesystemStub(live.channel)
    path = {"recursive": flip.work, "file": f"{flip.d}/f"}.get(mode, flip.d)
    request = filesystem_pb2.LsRequest(
        system_name=SYSTEM,
        path=path,
        recursive=mode == "recursive",
        dereference=mode == "dereference",
    )
    listed: list[dict[str, int]] = []

    async def ls(i: int) -> httpx.Response:
        try:
            reply = await stub.Ls(request, metadata=live.metadata("alice"), timeout=30)
        except grpc.aio.AioRpcError as error:
            assert error.code() in _REFUSED, error
            return httpx.Response(409)
        listed.append({entry.name: entry.size for entry in reply.output})
        return httpx.Response(200)

    await race(flip, ls)
    prefix = "d/" if mode == "recursive" else ""
    if mode == "file":  # the single entry, never the outside f's
        assert listed, listed
        assert all(list(names.values()) == [INSIDE_SIZE] for names in listed), listed
        return
    inside = [names for names in listed if f"{prefix}in-only" in names]
    assert inside, listed  # the race was run both ways: some listings were of the real d
    for names in listed:
        assert not any("OUT-" in name for name in names), names
        assert OUTSIDE_SIZE not in names.values(), names
    for names in inside:
        assert names[f"{prefix}f"] == INSIDE_SIZE, names
        if mode == "dereference":
            assert names["lf"] == INSIDE_SIZE, names  # the link followed, inside
