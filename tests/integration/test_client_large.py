"""200 MiB through the client: over the streams and through S3 staging.

SHA-256 end to end, and progress callbacks that only go forward and end at
the size. One file each way per path: such transfers are slow on a shared
test machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from conftest import LiveService
from hpcgate.client import AsyncClient, Client
from hpcgate.v1 import filesystem_pb2, transfer_pb2

SIZE = int(os.environ.get("HPCGATE_CLIENT_LARGE_MIB", "200")) * 1024 * 1024
ACCOUNT = "proj1"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 200 MiB local file of pseudo-random bytes, and its SHA-256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    block = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(SIZE // len(block)):
            chunk = index.to_bytes(8, "big") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return path, digest.hexdigest()


def _forward(seen: list[int]) -> None:
    assert seen == sorted(seen) and seen[-1] == SIZE, seen[-3:]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def test_200_mib_over_the_streams(
    live: LiveService, remote_dir: str, tmp_path: Path, big: tuple[Path, str]
) -> None:
    local, digest = big
    ups: list[int] = []
    downs: list[int] = []

    def run() -> None:
        with Client(live.grpc_target, live.token("alice"), system=live.system) as client:
            reply = client.upload(local, f"{remote_dir}/big", progress=lambda d, _: ups.append(d))
            assert reply.sha256 == digest and reply.size == SIZE
            client.download(
                f"{remote_dir}/big", tmp_path / "back", progress=lambda d, _: downs.append(d)
            )

    await asyncio.to_thread(run)
    _forward(ups)
    _forward(downs)
    assert _sha256(tmp_path / "back") == digest


STAGED = {"stage_above": 0, "account": ACCOUNT}  # everything through S3


async def test_200_mib_upload_through_s3_staging(
    live: LiveService, remote_dir: str, big: tuple[Path, str]
) -> None:
    local, digest = big
    ups: list[int] = []
    async with AsyncClient(
        live.grpc_target, live.token("alice"), system=live.system, **STAGED
    ) as client:
        status = await client.upload_staged(
            local, f"{remote_dir}/big", progress=lambda d, _: ups.append(d)
        )
        checksum = await client.filesystem.Checksum(
            filesystem_pb2.ChecksumRequest(system_name=live.system, path=f"{remote_dir}/big")
        )
    _forward(ups)
    assert status.phase == transfer_pb2.TRANSFER_PHASE_SUCCEEDED
    assert checksum.output.checksum == digest


async def test_200_mib_download_through_s3_staging(
    live: LiveService, remote_dir: str, tmp_path: Path, big: tuple[Path, str]
) -> None:
    local, digest = big
    downs: list[int] = []
    async with AsyncClient(
        live.grpc_target, live.token("alice"), system=live.system, **STAGED
    ) as client:
        await client.upload(local, f"{remote_dir}/big")  # staged too: stage_above=0
        back = await client.download_staged(
            f"{remote_dir}/big", tmp_path / "back", progress=lambda d, _: downs.append(d)
        )
    _forward(downs)
    assert _sha256(back) == digest
