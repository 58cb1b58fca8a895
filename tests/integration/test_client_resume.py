"""A staged upload whose process is killed mid-way resumes in a new process.

A child process uploads a file of eight 5 MiB parts (the server's part size
here), one part at a time; once two parts are stored it stops in its
progress callback and is killed (SIGKILL: nothing of it runs any more).
This process then uploads the same file to the same place with the same
state directory: it finds the killed upload's state file, checks that its
transfer still waits, sends only the six missing parts (its progress starts
at two parts) into the same transfer job, and the file arrives whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster_fixture import Cluster
from conftest import LiveService, live_settings, start_service
from devkeys import DevIssuer
from hpcgate.client import Client
from hpcgate.v1 import filesystem_pb2, transfer_pb2
from localsite import SYSTEM, local_config

PART = 5 * 1024 * 1024
PARTS = 8
STOP_AFTER = 2  # parts the killed process stores

CHILD = textwrap.dedent(
    """
    import sys, time
    from hpcgate.client import Client

    target, token, system, local, remote, state, stop_at = sys.argv[1:]

    def progress(done, total):
        if done >= int(stop_at):
            print("stopped", done, flush=True)
            time.sleep(3600)  # killed here

    options = {"system": system, "account": "proj1", "resume_dir": state}
    with Client(target, token, **options) as client:
        client.upload_staged(local, remote, parallel=1, progress=progress)
    """
)


@pytest.fixture(scope="module")
async def small_parts(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveService]:
    """A server whose staged transfers use 5 MiB parts (S3's smallest)."""
    issuer = DevIssuer.generate()
    jwks = tmp_path_factory.mktemp("resume") / "jwks.json"
    issuer.write_jwks(jwks)
    base = local_config(cluster.raw, jwks)["systems"][0]["s3"]
    settings = live_settings(cluster, jwks, s3={**base, "max_part_size": PART})
    async for service in start_service(settings):
        yield LiveService(**vars(service), issuer=issuer, system=SYSTEM)


async def test_a_killed_upload_resumes_in_a_new_process(
    small_parts: LiveService, remote_dir: str, tmp_path: Path
) -> None:
    live = small_parts
    local, state = tmp_path / "data.bin", tmp_path / "state"
    local.write_bytes(os.urandom(PARTS * PART - 123))
    remote = f"{remote_dir}/data.bin"
    args = [live.grpc_target, live.token("alice"), live.system, str(local), remote, str(state)]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, *args, str(STOP_AFTER * PART), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 120)
    assert line.startswith(b"stopped"), line
    child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL

    (left,) = state.iterdir()  # the killed upload's state: its job and two parts
    killed = json.loads(left.read_text())
    assert sorted(killed["etags"]) == [str(i) for i in range(STOP_AFTER)]

    seen: list[int] = []

    def resume() -> transfer_pb2.TransferStatus:
        options = {"system": live.system, "account": "proj1", "resume_dir": state}
        with Client(live.grpc_target, live.token("alice"), **options) as client:
            status = client.upload_staged(local, remote, progress=lambda d, _: seen.append(d))
            request = filesystem_pb2.ChecksumRequest(system_name=live.system, path=remote)
            assert client.filesystem.Checksum(request).output.checksum == _sha256(local)
            return status

    status = await asyncio.to_thread(resume)
    assert seen[0] == STOP_AFTER * PART, seen[:3]  # the stored parts were not sent again
    assert seen == sorted(seen) and seen[-1] == local.stat().st_size
    assert status.phase == transfer_pb2.TRANSFER_PHASE_SUCCEEDED
    assert status.transfer_job.job_id == killed["job_id"]  # the same transfer, resumed
    assert list(state.iterdir()) == []  # completed: nothing left to resume


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
