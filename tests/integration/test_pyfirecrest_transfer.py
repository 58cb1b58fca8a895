"""The official pyfirecrest v2 client, unchanged, moving small files through the edge.

Below its ``MAX_DIRECT_UPLOAD_SIZE`` (1 MiB) pyfirecrest uploads with a
multipart POST to ``ops/upload`` and downloads with ``ops/stat`` followed by
``ops/download``; those are the paths exercised here.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from firecrest.v2 import AsyncFirecrest

from cluster_fixture import Cluster
from localsite import SYSTEM


async def test_upload_and_download_below_one_mib(
    client: AsyncFirecrest, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    content = os.urandom(1024 * 1024 - 1)
    local = tmp_path / "local.bin"
    local.write_bytes(content)

    assert await client.upload(SYSTEM, local, remote_dir, "uploaded file.bin") is None
    uploaded = f"{remote_dir}/uploaded file.bin"
    async with (
        cluster.connect("alice") as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(uploaded, "rb") as file,
    ):
        assert await file.read() == content

    target = tmp_path / "downloaded.bin"
    await client.download(SYSTEM, f"{remote_dir}/uploaded file.bin", target)
    assert target.read_bytes() == content


async def test_download_of_a_missing_file_is_file_not_found(
    client: AsyncFirecrest, remote_dir: str, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        await client.download(SYSTEM, f"{remote_dir}/missing", tmp_path / "x")


async def test_upload_of_an_empty_file(
    client: AsyncFirecrest, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    local = tmp_path / "empty"
    local.write_bytes(b"")
    await client.upload(SYSTEM, local, remote_dir, "empty")
    target = tmp_path / "back"
    await client.download(SYSTEM, f"{remote_dir}/empty", target)
    assert target.read_bytes() == b""
    async with cluster.connect("alice") as conn:
        listing = await conn.run(shlex.join(["ls", "-A", "--", remote_dir]), check=True)
    assert str(listing.stdout).split() == ["empty"]
