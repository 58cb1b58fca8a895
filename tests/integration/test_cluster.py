"""The loopback cluster itself: SSH with a user CA, Slurm with accounting, S3, Unix permissions.

These check the ground the service's integration tests stand on, against
the real daemons started by dev/cluster/cluster.py.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh
import boto3
import httpx
import jwt
import pytest
from botocore.config import Config

if TYPE_CHECKING:
    from cluster_fixture import Cluster

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024


async def run_as(cluster: Cluster, user: str, command: str) -> asyncssh.SSHCompletedProcess:
    async with cluster.connect(user) as conn:
        result: asyncssh.SSHCompletedProcess = await conn.run(command, check=False)
        return result


# --------------------------------------------------------------------------- SSH


async def test_certificate_login(cluster: Cluster) -> None:
    async with cluster.connect("alice") as conn:
        r = await conn.run("id -un; printenv SLURM_CONF", check=True)
    assert r.stdout.split() == ["alice", cluster.slurm_conf]


async def test_unsigned_key_is_refused(cluster: Cluster) -> None:
    bare = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        async with cluster.connect("alice", key=bare):
            pass


async def test_certificate_for_another_principal_is_refused(cluster: Cluster) -> None:
    alice_key = cluster.mint_user_key("alice")
    with pytest.raises(asyncssh.PermissionDenied):
        async with cluster.connect("bob", key=alice_key):
            pass


async def test_expired_certificate_is_refused(cluster: Cluster) -> None:
    ca = cluster.ca_key()
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = int(time.time())
    cert = ca.generate_user_certificate(
        key.convert_to_public(),
        "expired",
        principals=["alice"],
        valid_after=now - 7200,
        valid_before=now - 3600,
    )
    with pytest.raises(asyncssh.PermissionDenied):
        async with cluster.connect("alice", key=(key, cert)):
            pass


async def test_wrong_host_key_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known = tmp_path / "known_hosts"
    known.write_text(f"[{cluster.ssh.host}]:{cluster.ssh.port} {other}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with cluster.connect("alice", known_hosts=str(known)):
            pass


async def test_sftp(cluster: Cluster) -> None:
    name = f"/home/alice/sftp-{uuid.uuid4().hex}.bin"
    data = os.urandom(300_000)
    async with cluster.connect("alice") as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(name, "wb") as f:
            await f.write(data)
        attrs = await sftp.stat(name)
        assert attrs.size == len(data)
        async with sftp.open(name, "rb") as f:
            assert await f.read() == data
        assert os.path.basename(name) in await sftp.listdir("/home/alice")
        await sftp.remove(name)


async def test_max_sessions_is_ten(cluster: Cluster) -> None:
    """sshd allows exactly MaxSessions channels per connection (the pool relies on it)."""
    assert cluster.ssh.max_sessions == 10
    async with cluster.connect("alice") as conn:
        # `cat` holds its channel open until stdin ends.
        procs = [await conn.create_process("cat") for _ in range(10)]
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process("true")
        for p in procs:
            p.stdin.write_eof()
        await asyncio.gather(*(p.wait_closed() for p in procs))
        # Channels are freed once closed.
        r = await conn.run("echo again", check=True)
        assert r.stdout.strip() == "again"


# --------------------------------------------------------------------------- Slurm


async def submit_and_wait(
    cluster: Cluster, user: str, script: str, wait_s: float = 60
) -> tuple[str, str, str]:
    """sbatch ``script`` as ``user``; poll sacct until the job ends: (job id, state, exit code)."""
    async with cluster.connect(user) as conn:
        r = await conn.run(
            f"sbatch --parsable --chdir=/scratch/{user} --output=/dev/null"
            f" --wrap {shlex.quote(script)}",
            check=True,
        )
        job_id = r.stdout.strip().split(";")[0]
        assert job_id.isdigit(), r.stdout
        deadline = time.monotonic() + wait_s
        last = ""
        while time.monotonic() < deadline:
            r = await conn.run(f"sacct -j {job_id} -X -n -P -o JobID,State,ExitCode", check=True)
            last = r.stdout.strip()
            for line in last.splitlines():
                jid, state, exit_code = line.split("|")
                if jid == job_id and state not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"):
                    return job_id, state, exit_code
            await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished in sacct after {wait_s}s; last: {last!r}")


async def test_job_completes_with_exit_code_zero(cluster: Cluster) -> None:
    _, state, exit_code = await submit_and_wait(cluster, "alice", "echo hello; exit 0")
    assert (state, exit_code) == ("COMPLETED", "0:0")


async def test_job_failure_exit_code_in_sacct(cluster: Cluster) -> None:
    _, state, exit_code = await submit_and_wait(cluster, "alice", "exit 3")
    assert (state, exit_code) == ("FAILED", "3:0")


async def test_partitions_reservation_and_accounts(cluster: Cluster) -> None:
    slurm = cluster.slurm
    async with cluster.connect("alice") as conn:
        visible = (await conn.run("sinfo -h -o %R", check=True)).stdout.split()
        everything = (await conn.run("sinfo -a -h -o %R", check=True)).stdout.split()
        resv = await conn.run(f"scontrol -o show reservation {slurm['reservation']}", check=True)
        assoc = await conn.run("sacctmgr -n -P show assoc user=alice format=cluster,account")
        # A job for an account alice is not in is refused (associations are enforced).
        bad = await conn.run("sbatch --account=nosuchacct --wrap true", check=False)
    hidden = set(slurm["hidden_partitions"])
    assert set(visible) == set(slurm["partitions"]) - hidden
    assert set(everything) == set(slurm["partitions"])
    assert "Users=alice" in resv.stdout and f"Nodes={slurm['node']}" in resv.stdout
    assert {tuple(line.split("|")) for line in str(assoc.stdout).split()} == {
        (slurm["cluster"], a) for a in cluster.users["alice"]["accounts"]
    }
    assert bad.exit_status != 0


# --------------------------------------------------------------------------- S3


def s3_client(cluster: Cluster) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=cluster.s3.endpoint,
        region_name=cluster.s3.region,
        aws_access_key_id=cluster.s3.access_key,
        aws_secret_access_key=cluster.s3.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


async def test_s3_presigned_put_get_roundtrip(cluster: Cluster) -> None:
    s3 = s3_client(cluster)
    bucket, key = f"rt-{uuid.uuid4().hex[:12]}", "dir/data.bin"
    s3.create_bucket(Bucket=bucket)
    data = os.urandom(5 * MiB)
    obj = {"Bucket": bucket, "Key": key}
    put_url: str = s3.generate_presigned_url("put_object", Params=obj, ExpiresIn=300)
    get_url: str = s3.generate_presigned_url("get_object", Params=obj, ExpiresIn=300)
    assert put_url.startswith(f"{cluster.s3.endpoint}/{bucket}/")  # path-style
    assert "X-Amz-Signature=" in put_url and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in put_url
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.put(put_url, content=data)
        assert r.status_code == 200, r.text
        r = await http.get(get_url)
        assert r.status_code == 200, r.text
    assert r.content == data


async def test_s3_presigned_multipart_upload(cluster: Cluster) -> None:
    s3 = s3_client(cluster)
    bucket, key = f"mp-{uuid.uuid4().hex[:12]}", "big.bin"
    s3.create_bucket(Bucket=bucket)
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1 * MiB + 123)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    async with httpx.AsyncClient(timeout=60) as http:
        for n, body in enumerate(parts, start=1):
            url = s3.generate_presigned_url(
                "upload_part",
                Params={"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": n},
                ExpiresIn=300,
            )
            r = await http.put(url, content=body)
            assert r.status_code == 200, r.text
            done.append({"PartNumber": n, "ETag": r.headers["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert got == b"".join(parts)


# --------------------------------------------------------------------------- Unix permissions


async def test_alice_cannot_read_bobs_private_file(cluster: Cluster) -> None:
    # In /tmp (traversable by all), so only the file's own 0600 mode protects it.
    path = f"/tmp/bob-secret-{uuid.uuid4().hex}"
    async with cluster.connect("bob") as bob:
        await bob.run(f"umask 077 && echo secret > {path} && chmod 600 {path}", check=True)
        try:
            r = await run_as(cluster, "alice", f"cat {path}")
            assert r.exit_status != 0
            assert "Permission denied" in str(r.stderr)
            assert "secret" not in str(r.stdout)
            # bob's home is closed to alice too, over SFTP as well as the shell.
            await bob.run("echo secret > ~/private.txt && chmod 600 ~/private.txt", check=True)
            async with cluster.connect("alice") as alice, alice.start_sftp_client() as sftp:
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    async with sftp.open(f"{cluster.users['bob']['home']}/private.txt", "rb") as f:
                        await f.read()
        finally:
            await bob.run(f"rm -f {path} ~/private.txt", check=False)


# --------------------------------------------------------------------------- slurmrestd


async def _rest_get(cluster: Cluster, path: str, user: str, token: str) -> httpx.Response:
    rest = cluster.raw["slurmrestd"]
    async with httpx.AsyncClient(base_url=rest["url"], timeout=10) as client:
        return await client.get(
            f"/slurm/{rest['api_version']}/{path}",
            headers={"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token},
        )


async def _scontrol_token(cluster: Cluster, user: str) -> str:
    """A JWT for ``user`` as a site's user gets one: ``scontrol token``, run as that user."""
    r = await run_as(cluster, user, "scontrol token lifespan=120")
    assert r.returncode == 0, r.stderr
    key, _, token = str(r.stdout).strip().partition("=")
    assert key == "SLURM_JWT" and token, r.stdout
    return token


async def test_slurmrestd_answers_a_users_scontrol_token(cluster: Cluster) -> None:
    token = await _scontrol_token(cluster, "alice")
    ping = await _rest_get(cluster, "ping", "alice", token)
    assert ping.status_code == 200, ping.text
    body = ping.json()
    assert body["errors"] == []
    assert [p["ping"] for p in body["pings"]] == ["UP"]
    assert body["meta"]["plugin"]["type"] == f"openapi/{cluster.raw['slurmrestd']['api_version']}"


async def test_slurmrestd_accepts_a_token_minted_from_the_key(cluster: Cluster) -> None:
    # What a site's gateway does: sign {sun, iat, exp} with the cluster's HS256 key.
    key = await asyncio.to_thread(Path(cluster.raw["slurmrestd"]["jwt_key"]).read_bytes)
    now = int(time.time())
    token = jwt.encode({"sun": "bob", "iat": now, "exp": now + 60}, key, algorithm="HS256")
    r = await _rest_get(cluster, "ping", "bob", token)
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == []


async def test_slurmrestd_refuses_a_token_of_another_user(cluster: Cluster) -> None:
    token = await _scontrol_token(cluster, "alice")
    r = await _rest_get(cluster, "ping", "bob", token)
    assert r.status_code != 200, r.text
    forged = await _rest_get(cluster, "ping", "alice", token[:-4] + "AAAA")
    assert forged.status_code != 200, forged.text


async def test_jwt_key_is_root_only(cluster: Cluster) -> None:
    mode = await asyncio.to_thread(Path(cluster.raw["slurmrestd"]["jwt_key"]).stat)
    assert (mode.st_uid, mode.st_mode & 0o777) == (0, 0o600)
