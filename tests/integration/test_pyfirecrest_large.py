"""The official pyfirecrest v2 client, unchanged, moving a large file through S3.

From ``MAX_DIRECT_UPLOAD_SIZE`` (1 MiB) on pyfirecrest uses ``transfer/upload``
and ``transfer/download``: it PUTs the parts on the presigned URLs, POSTs the
completion, waits for the transfer job and reads its output log through
``ops/view``, raising unless the log says the transfer succeeded. Here it
runs against the service as ``make run`` configures it (1 GiB parts, no
transfer directives).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from firecrest.v2 import AsyncFirecrest

from cluster_fixture import Cluster
from localsite import SYSTEM

SIZE = 12 * 1024 * 1024


# pyfirecrest POSTs the completion document with httpx's deprecated `data=`.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_upload_and_download_12_mib_through_s3(
    client: AsyncFirecrest, remote_dir: str, tmp_path: Path, cluster: Cluster
) -> None:
    content = os.urandom(SIZE)
    local = tmp_path / "large.bin"
    local.write_bytes(content)

    upload = await client.upload(SYSTEM, str(local), remote_dir, "large.bin", blocking=True)
    # Blocking: the parts went up, the job ran, and its log passed pyfirecrest's check.
    assert upload is not None
    job = upload.transfer_data["transferJob"]
    log = await client.view(SYSTEM, job["logs"]["outputLog"])
    assert "File was successfully uploaded" in log
    async with cluster.connect("alice") as conn:
        stat = await conn.run(shlex.join(["stat", "-c", "%s", f"{remote_dir}/large.bin"]))
    assert int(str(stat.stdout)) == SIZE

    fetched = tmp_path / "fetched.bin"
    download = await client.download(SYSTEM, f"{remote_dir}/large.bin", str(fetched), blocking=True)
    assert download is not None
    assert fetched.read_bytes() == content
    async with cluster.connect("alice") as conn:
        logs = [upload.transfer_data, download.transfer_data]
        paths = [p for data in logs for p in data["transferJob"]["logs"].values()]
        await conn.run(shlex.join(["rm", "-f", "--", *paths]), check=True)
