"""The official pyfirecrest v2 client (PyPI), unchanged, against the edge.

Covers the synchronous filesystem calls. mv and cp are not here: in
FirecREST v2 they are always transfer jobs (``/filesystem/{system}/transfer``),
which are the Transfer service's, not ``ops``.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from firecrest import FirecrestException
from firecrest.v2 import AsyncFirecrest, Firecrest

from cluster_fixture import Cluster
from conftest import LiveService, StaticToken

pytestmark = pytest.mark.asyncio

CONTENT = b"".join(b"line %d\n" % i for i in range(1, 31))


@pytest.fixture
async def workdir(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh directory of alice's with ``data.txt`` in it, removed afterwards."""
    path = f"/home/alice/hpcgate-pyfirecrest-{uuid.uuid4().hex[:10]}"
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["mkdir", "--", path]), check=True)
        async with conn.start_sftp_client() as sftp, sftp.open(f"{path}/data.txt", "wb") as f:
            await f.write(CONTENT)
        try:
            yield path
        finally:
            await conn.run(shlex.join(["rm", "-rf", "--", path]), check=True)


async def test_reading_calls(client: AsyncFirecrest, live: LiveService, workdir: str) -> None:
    system, path = live.system, f"{workdir}/data.txt"

    files = await client.list_files(system, workdir)
    assert [(f["name"], f["type"], f["user"]) for f in files] == [("data.txt", "-", "alice")]
    assert int(files[0]["size"]) == len(CONTENT)
    hidden = await client.list_files(system, workdir, show_hidden=True, numeric_uid=True)
    assert hidden[0]["user"].isdigit()

    assert await client.view(system, path) == CONTENT.decode()
    head = await client.head(system, path, num_lines=2)
    assert head["content"] == "line 1\nline 2\n"
    assert (head["contentType"], head["startPosition"], head["endPosition"]) == ("lines", 0, 2)
    assert (await client.head(system, path, num_bytes=4))["content"] == "line"
    tail = await client.tail(system, path, num_lines=1)
    assert tail["content"] == "line 30\n"
    skipped = await client.tail(system, path, num_lines=28, exclude_beginning=True)
    assert skipped["content"] == "line 28\nline 29\nline 30\n"  # tail --lines=+28

    checksum = await client.checksum(system, path)
    assert checksum == {"algorithm": "SHA256", "checksum": hashlib.sha256(CONTENT).hexdigest()}
    assert await client.file_type(system, path) == "ASCII text"
    st = await client.stat(system, path)
    assert stat.S_ISREG(st["mode"]) and st["size"] == len(CONTENT)

    with pytest.raises(FirecrestException) as caught:
        await client.view(system, f"{workdir}/missing")
    response = caught.value.responses[-1]
    assert response.status_code == 404
    assert "No such file or directory" in response.json()["message"]


async def test_changing_calls(client: AsyncFirecrest, live: LiveService, workdir: str) -> None:
    system = live.system
    made = await client.mkdir(system, f"{workdir}/a/b", create_parents=True)
    assert (made["name"], made["type"]) == (f"{workdir}/a/b", "d")
    with pytest.raises(FirecrestException) as caught:
        await client.mkdir(system, f"{workdir}/a/b")
    assert caught.value.responses[-1].status_code == 400

    link = await client.symlink(system, f"{workdir}/data.txt", f"{workdir}/a/link")
    assert link["output"]["linkTarget"] == f"{workdir}/data.txt"
    dangling = await client.symlink(system, f"{workdir}/not-yet", f"{workdir}/dangling")
    assert dangling["output"]["type"] == "l"

    changed = await client.chmod(system, f"{workdir}/data.txt", "700")
    assert changed["permissions"] == "rwx------"
    owned = await client.chown(system, f"{workdir}/data.txt", "alice", "hpcproj")
    assert (owned["user"], owned["group"]) == ("alice", "hpcproj")

    await client.compress(system, f"{workdir}/a", f"{workdir}/a.tar.gz")
    await client.mkdir(system, f"{workdir}/x")
    await client.extract(system, f"{workdir}/a.tar.gz", f"{workdir}/x")
    names = [f["name"] for f in await client.list_files(system, f"{workdir}/x", recursive=True)]
    assert names == ["a", "a/b", "a/link"]

    await client.rm(system, f"{workdir}/a")
    await client.rm(system, f"{workdir}/dangling")
    remaining = [f["name"] for f in await client.list_files(system, workdir)]
    assert remaining == ["a.tar.gz", "data.txt", "x"]


async def test_small_upload_and_download(
    client: AsyncFirecrest, live: LiveService, workdir: str, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 1000  # below pyfirecrest's 1 MiB direct-transfer limit
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    await client.upload(live.system, str(local), workdir, "up.bin")
    back = tmp_path / "down.bin"
    await client.download(live.system, f"{workdir}/up.bin", str(back))
    assert back.read_bytes() == data
    with pytest.raises(FileNotFoundError):
        await client.download(live.system, f"{workdir}/missing.bin", str(back))


async def test_the_synchronous_client(live: LiveService, workdir: str) -> None:
    """The blocking client too (in a thread: the service runs in this event loop)."""

    def use() -> tuple[list[str], str]:
        client = Firecrest(live.rest_url, StaticToken(live.token("alice")))
        names = [f["name"] for f in client.list_files(live.system, workdir)]
        return names, client.checksum(live.system, f"{workdir}/data.txt")["checksum"]

    names, digest = await asyncio.to_thread(use)
    assert names == ["data.txt"]
    assert digest == hashlib.sha256(CONTENT).hexdigest()


async def test_another_user_is_refused(live: LiveService, workdir: str) -> None:
    bob = AsyncFirecrest(live.rest_url, StaticToken(live.token("bob")))
    try:
        with pytest.raises(FirecrestException) as caught:
            await bob.head(live.system, f"{workdir}/data.txt")
        assert caught.value.responses[-1].status_code == 403
    finally:
        await bob.close_session()
