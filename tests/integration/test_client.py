"""hpcgate.client against the loopback cluster: sync and asyncio alike.

The server of the ``live`` fixture runs in the test's event loop, so the
blocking client runs in a worker thread (``asyncio.to_thread``), as it would
in a program of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
from pathlib import Path

import pytest

from cluster_fixture import Cluster
from conftest import LiveService, Service
from hpcgate.client import (
    AsyncClient,
    Client,
    ClientCredentials,
    InvalidArgument,
    NotFound,
    TokenFile,
)
from hpcgate.v1 import filesystem_pb2, scheduler_pb2, status_pb2
from oidc import Provider

SCRIPT = "#!/bin/bash\nsleep 1\necho done\n"


def _monotonic(calls: list[tuple[int, int | None]], size: int) -> None:
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[0] == 0 and done[-1] == size
    assert {total for _, total in calls} == {size}


async def test_sync_client_surface(live: LiveService, remote_dir: str, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))

    def run() -> None:
        with Client(live.grpc_target, live.token("alice"), system=live.system) as client:
            systems = client.status.ListSystems(status_pb2.ListSystemsRequest())
            assert [s.name for s in systems.systems] == [live.system]
            ups: list[tuple[int, int | None]] = []
            reply = client.upload(source, f"{remote_dir}/a.bin", progress=lambda *p: ups.append(p))
            assert reply.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
            _monotonic(ups, source.stat().st_size)
            downs: list[tuple[int, int | None]] = []
            back = client.download(
                f"{remote_dir}/a.bin", tmp_path / "back.bin", progress=lambda *p: downs.append(p)
            )
            assert back.read_bytes() == source.read_bytes()
            _monotonic(downs, source.stat().st_size)
            listing = client.filesystem.Ls(
                filesystem_pb2.LsRequest(system_name=live.system, path=remote_dir)
            )
            assert [entry.name for entry in listing.output] == ["a.bin"]
            with pytest.raises(NotFound) as missing:
                client.filesystem.Stat(
                    filesystem_pb2.StatRequest(system_name=live.system, path=f"{remote_dir}/nope")
                )
            assert missing.value.reason and "nope" in str(missing.value)
            with pytest.raises(InvalidArgument) as bad:
                client.filesystem.Ls(filesystem_pb2.LsRequest(system_name=live.system, path=""))
            assert [v.field for v in bad.value.violations] == ["path"]
            job = client.submit(SCRIPT, working_directory=remote_dir, name="client-sync")
            states = [event.job.status.normalized_state for event in job.watch()]
            assert states[-1] == scheduler_pb2.JOB_STATE_COMPLETED
            assert len(states) == len(set(states))  # each transition once
            assert job.wait().status.normalized_state == scheduler_pb2.JOB_STATE_COMPLETED

    await asyncio.to_thread(run)


async def test_async_client_surface(live: LiveService, remote_dir: str, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    async with AsyncClient(live.grpc_target, live.token("alice"), system=live.system) as client:
        systems = await client.status.ListSystems(status_pb2.ListSystemsRequest())
        assert [s.name for s in systems.systems] == [live.system]
        await client.upload(source, f"{remote_dir}/b.bin")
        back = await client.download(f"{remote_dir}/b.bin", tmp_path / "back.bin")
        assert back.read_bytes() == source.read_bytes()
        with pytest.raises(NotFound):
            await client.filesystem.Stat(
                filesystem_pb2.StatRequest(system_name=live.system, path=f"{remote_dir}/nope")
            )
        with pytest.raises(NotFound):
            async for _ in client.filesystem.DownloadStream(
                filesystem_pb2.DownloadStreamRequest(
                    system_name=live.system, path=f"{remote_dir}/nope"
                )
            ):
                pass
        job = await client.submit(SCRIPT, working_directory=remote_dir, name="client-async")
        final = await job.wait()
        assert final.status.normalized_state == scheduler_pb2.JOB_STATE_COMPLETED


async def test_download_many_of_1000_files(
    live: LiveService, cluster: Cluster, remote_dir: str, tmp_path: Path
) -> None:
    async with cluster.connect("alice") as conn:
        script = (
            f"cd {shlex.quote(remote_dir)} && for i in $(seq 1 1000); do echo file-$i > f$i; done"
        )
        await conn.run(script, check=True)
    paths = [f"{remote_dir}/f{i}" for i in range(1, 1001)]
    seen: list[int] = []
    async with AsyncClient(live.grpc_target, live.token("alice"), system=live.system) as client:
        result = await client.download_many(paths, tmp_path, progress=lambda d, _: seen.append(d))
    assert not result.errors and len(result.files) == 1000
    assert (tmp_path / "f537").read_text() == "file-537\n"
    assert seen == sorted(seen)


async def test_client_credentials_refresh_before_expiry(oidc: Provider, oidc_live: Service) -> None:
    user = oidc.client_of("alice")
    # 20-second tokens (OIDC_TEST_LIFETIME) renewed 18 s early: the second call,
    # 3 s later, must go out with a fresh token, never with a stale one.
    source = ClientCredentials(oidc.token_url, user.client_id, user.client_secret, leeway=18)
    async with AsyncClient(oidc_live.grpc_target, source) as client:
        await client.status.ListSystems(status_pb2.ListSystemsRequest())
        assert source.fetches == 1
        await asyncio.sleep(3)
        await client.status.ListSystems(status_pb2.ListSystemsRequest())
        assert source.fetches == 2


async def test_token_file_is_reread_when_it_changes(live: LiveService, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("not-a-token\n")
    async with AsyncClient(live.grpc_target, TokenFile(path)) as client:
        with pytest.raises(Exception) as refused:
            await client.status.ListSystems(status_pb2.ListSystemsRequest())
        assert type(refused.value).__name__ == "Unauthenticated"
        path.write_text(live.token("alice") + "\n")
        await client.status.ListSystems(status_pb2.ListSystemsRequest())
