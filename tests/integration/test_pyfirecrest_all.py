"""pyfirecrest, unchanged, runs every public method of its v2 clients and every CLI command.

The sync client (``firecrest.v2.Firecrest``), the async client
(``AsyncFirecrest``) and the ``firecrest`` console script all get their tokens
with ``ClientCredentialsAuth`` from the local OIDC provider, as a site's users
do. The public methods are enumerated from the classes and the commands from
the CLI's Typer app, and each test asserts that it used all of them, so a
method or command a new pyfirecrest adds fails here until it is exercised.

One scratch directory of alice's (inputs shared, one subdirectory per client)
and one running job (for info, metadata and attach) serve all three tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import shlex
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
from firecrest import FirecrestException, cli2
from firecrest.v2 import AsyncFirecrest, Firecrest
from integration.test_oidc_pyfirecrest import credentials
from integration.test_scheduler import eventually

from cluster_fixture import Cluster
from conftest import Service
from hpcgate.edge.headers import FIRECREST_API_VERSION
from localsite import SYSTEM
from oidc import Provider

# pyfirecrest POSTs the S3 completion document with httpx's deprecated `data=`.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

DATA = b"".join(b"line %d\n" % i for i in range(1, 31))
# The tree every archive format packs and unpacks.
TREE = {"tree/a.txt": b"alpha\n", "tree/sub/b.bin": bytes(range(256))}
# Every format pyfirecrest's compress/extract offer, with the name a user gives the archive.
FORMATS = {"none": "tar", "gzip": "tar.gz", "bzip2": "tar.bz2", "xz": "tar.xz"}
# A job id Slurm has not handed out.
UNKNOWN_JOB = "987654321"


def public_methods(cls: type) -> set[str]:
    """The public methods and properties of a pyfirecrest client class."""
    return {
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }


def cli_commands() -> set[str]:
    """The commands of pyfirecrest's v2 CLI, as its Typer app registers them."""
    group = typer.main.get_command(cli2.app)
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


@dataclass
class Scratch:
    """The shared scratch directory and the shared running job."""

    path: str
    job_id: str


async def job_state(client: AsyncFirecrest, job_id: str) -> str:
    (job,) = await client.job_info(SYSTEM, job_id)
    return str(job["status"]["state"])


@pytest.fixture(scope="module")
async def scratch(cluster: Cluster, oidc: Provider, oidc_live: Service) -> AsyncIterator[Scratch]:
    """alice's scratch directory with the inputs, and a job of hers running in it."""
    path = f"/home/alice/hpcgate-pyfc-{uuid.uuid4().hex[:10]}"
    client = AsyncFirecrest(oidc_live.rest_url, credentials(oidc, "alice", "client_secret_post"))
    async with cluster.connect("alice") as conn:
        await conn.run(shlex.join(["mkdir", "-p", "--", f"{path}/tree/sub"]), check=True)
        async with conn.start_sftp_client() as sftp:
            for name, content in {"data.txt": DATA, **TREE}.items():
                async with sftp.open(f"{path}/{name}", "wb") as file:
                    await file.write(content)
        job_id = ""
        try:
            script = "#!/bin/bash\n#SBATCH --output=shared.out\necho running; sleep 600\n"
            job_id = str((await client.submit(SYSTEM, path, script_str=script))["jobId"])
            # attach needs the allocation; Slurm starts the job within seconds here.
            await eventually(
                lambda: job_state(client, job_id), "RUNNING".__eq__, 60, "the shared job start"
            )
            yield Scratch(path, job_id)
        finally:
            if job_id:
                await conn.run(shlex.join(["scancel", "--", job_id]))
            await client.close_session()
            await conn.run(shlex.join(["rm", "-rf", "--", path]), check=True)


@dataclass
class Calls:
    """Calls either client from the test's event loop, recording each public name used.

    The sync client blocks, so it runs in a worker thread while this loop
    serves the edge and server; the async client's coroutines are awaited.
    One scenario thus drives both clients.
    """

    client: Firecrest | AsyncFirecrest
    used: set[str] = field(default_factory=set)

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.used.add(name)
        method = getattr(self.client, name)
        if isinstance(self.client, Firecrest):
            return await asyncio.to_thread(method, *args, **kwargs)
        result = method(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    def attribute(self, name: str) -> Any:
        self.used.add(name)
        return getattr(self.client, name)


async def scenario(call: Calls, shared: Scratch, tmp_path: Path) -> None:
    """Every public method of a v2 client, each checked against what the cluster holds."""
    base, system = shared.path, SYSTEM
    work = f"{base}/{uuid.uuid4().hex[:8]}"

    # Status
    assert await call("server_version") == FIRECREST_API_VERSION
    assert [s["name"] for s in await call("systems")] == [SYSTEM]
    assert all("name" in node for node in await call("nodes", system))
    assert all("name" in part for part in await call("partitions", system))
    assert isinstance(await call("reservations", system), list)
    assert (await call("userinfo", system))["user"]["name"] == "alice"

    # Reading files
    made = await call("mkdir", system, f"{work}/deep/er", create_parents=True)
    assert made["name"] == f"{work}/deep/er"
    names = {f["name"] for f in await call("list_files", system, base)}
    assert {"data.txt", "tree"} <= names
    data = f"{base}/data.txt"
    assert await call("view", system, data) == DATA.decode()
    assert (await call("head", system, data, num_lines=2))["content"] == "line 1\nline 2\n"
    assert (await call("head", system, data, num_bytes=4))["content"] == "line"
    all_but = await call("head", system, data, num_lines=28, exclude_trailing=True)
    assert all_but["content"] == "line 1\nline 2\n"  # head --lines=-28
    assert (await call("tail", system, data, num_bytes=3))["content"] == "30\n"
    everything = await call(
        "list_files",
        system,
        f"{base}/tree",
        show_hidden=True,
        recursive=True,
        numeric_uid=True,
        dereference=True,
    )
    assert sorted(f["name"] for f in everything) == ["a.txt", "sub", "sub/b.bin"]
    assert all(f["user"].isdigit() for f in everything)
    tail = await call("tail", system, data, num_lines=29, exclude_beginning=True)
    assert tail["content"] == "line 29\nline 30\n"  # tail --lines=+29
    assert (await call("checksum", system, data))["checksum"] == hashlib.sha256(DATA).hexdigest()
    assert await call("file_type", system, data) == "ASCII text"
    assert (await call("stat", system, data))["size"] == len(DATA)

    # Changing files; cp and mv are transfer jobs, waited for by the client.
    link = await call("symlink", system, data, f"{work}/link")
    assert link["output"]["linkTarget"] == data
    assert (await call("stat", system, f"{work}/link", dereference=True))["size"] == len(DATA)
    await call("cp", system, data, f"{work}/copy.txt")
    await call("mv", system, f"{work}/copy.txt", f"{work}/moved.txt")
    assert (await call("chmod", system, f"{work}/moved.txt", "640"))["permissions"] == "rw-r-----"
    owned = await call("chown", system, f"{work}/moved.txt", "alice", "hpcproj")
    assert (owned["user"], owned["group"]) == ("alice", "hpcproj")
    assert await call("view", system, f"{work}/moved.txt") == DATA.decode()

    # Every archive format, packed and unpacked again.
    for compression, extension in FORMATS.items():
        archive, target = f"{work}/tree.{extension}", f"{work}/out-{compression}"
        await call("compress", system, f"{base}/tree", archive, compression=compression)
        await call("mkdir", system, target)
        await call("extract", system, archive, target, compression=compression)
        listed = await call("list_files", system, target, recursive=True)
        assert sorted(f["name"] for f in listed) == [
            "tree",
            "tree/a.txt",
            "tree/sub",
            "tree/sub/b.bin",
        ]
        assert await call("view", system, f"{target}/tree/a.txt") == "alpha\n"
    # Only the regular files the pattern matches go into the archive.
    await call("compress", system, f"{base}/tree", f"{work}/txt.tar.gz", match_pattern=r".*\.txt")
    await call("mkdir", system, f"{work}/txt")
    await call("extract", system, f"{work}/txt.tar.gz", f"{work}/txt")
    packed = await call("list_files", system, f"{work}/txt", recursive=True)
    assert [f["name"] for f in packed if f["type"] == "-"] in (["a.txt"], ["tree/a.txt"])

    # Transfers: directly below pyfirecrest's limit, staged through S3 above it.
    limit = call.attribute("MAX_DIRECT_UPLOAD_SIZE")
    for size in (1000, limit + 1):
        content = os.urandom(size)
        local = tmp_path / f"up-{size}"
        local.write_bytes(content)
        staged = size > limit  # pyfirecrest returns the transfer's handle only when staged
        uploaded = await call("upload", system, str(local), work, f"up-{size}")
        assert (uploaded is not None) == staged
        back = tmp_path / f"down-{size}"
        downloaded = await call("download", system, f"{work}/up-{size}", str(back))
        assert (downloaded is not None) == staged
        assert back.read_bytes() == content

    # Jobs: the shared running one, then one of this client's own, cancelled.
    (info,) = await call("job_info", system, shared.job_id)
    assert info["status"]["state"] == "RUNNING"
    assert shared.job_id in {str(job["jobId"]) for job in await call("job_info", system)}
    (metadata,) = await call("job_metadata", system, shared.job_id)
    assert (str(metadata["jobId"]), metadata["standardOutput"]) == (
        shared.job_id,
        f"{base}/shared.out",
    )
    assert "sleep 600" in metadata["script"]
    await call("attach_to_job", system, shared.job_id, f"echo attached > {work}/attached")
    assert await call("view", system, f"{work}/attached") == "attached\n"
    script = "#!/bin/bash\nsleep 600\n"
    own = str((await call("submit", system, work, script_str=script))["jobId"])
    await call("cancel_job", system, own)
    (done,) = await call("wait_for_job", system, own, timeout=120)
    assert done["status"]["state"] == "CANCELLED"
    with pytest.raises(FirecrestException) as caught:
        await call("wait_for_job", system, UNKNOWN_JOB, not_found_timeout=1)
    response = caught.value.responses[-1]
    assert (response.status_code, response.json()["message"]) == (404, "Job not found.")

    # Removing, then the session and client-side settings.
    await call("rm", system, work)
    assert work.rsplit("/", 1)[1] not in {f["name"] for f in await call("list_files", system, base)}
    with pytest.raises(FirecrestException) as caught:
        await call("stat", system, work)
    assert caught.value.responses[-1].status_code == 404
    await call("log", logging.DEBUG, "every method exercised")
    await call("set_api_version", "2.6.0")
    if isinstance(call.client, AsyncFirecrest):
        await call("set_maximum_s3_connections", 4)
    await call("create_new_session")
    assert call.attribute("is_session_closed") is False
    assert [s["name"] for s in await call("systems")] == [SYSTEM]
    await call("close_session")
    assert call.attribute("is_session_closed") is True


async def test_async_client(
    oidc: Provider, oidc_live: Service, scratch: Scratch, tmp_path: Path
) -> None:
    call = Calls(
        AsyncFirecrest(oidc_live.rest_url, credentials(oidc, "alice", "client_secret_post"))
    )
    await scenario(call, scratch, tmp_path)
    assert public_methods(AsyncFirecrest) - call.used == set()


async def test_sync_client(
    oidc: Provider, oidc_live: Service, scratch: Scratch, tmp_path: Path
) -> None:
    call = Calls(Firecrest(oidc_live.rest_url, credentials(oidc, "alice", "client_secret_basic")))
    await scenario(call, scratch, tmp_path)
    assert public_methods(Firecrest) - call.used == set()


# The console script pyfirecrest installs, beside this interpreter.
FIRECREST = str(Path(sys.executable).with_name("firecrest"))


@dataclass
class Cli:
    """Runs pyfirecrest's console script as a user does, configured by its environment."""

    env: dict[str, str]
    used: set[str] = field(default_factory=set)

    async def __call__(self, command: str, *args: str, status: int = 0) -> str:
        """The command's standard output; it must exit with ``status``."""
        self.used.add(command)
        # A subprocess: the CLI runs its own event loop while this one serves the edge.
        process = await asyncio.create_subprocess_exec(
            FIRECREST,
            command,
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == status, (
            f"firecrest {command} {shlex.join(args)}: {out!r} {err!r}"
        )
        return out.decode()

    async def json(self, command: str, *args: str) -> Any:
        return json.loads(await self(command, *args))


async def test_cli(oidc: Provider, oidc_live: Service, scratch: Scratch, tmp_path: Path) -> None:
    alice = oidc.client_of("alice")
    cli = Cli(
        {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "COLUMNS": "200",  # rich wraps its output at the terminal's width
            "FIRECREST_URL": oidc_live.rest_url,
            "AUTH_TOKEN_URL": oidc.token_url,
            "FIRECREST_CLIENT_ID": alice.client_id,
            "FIRECREST_CLIENT_SECRET": alice.client_secret,
            "FIRECREST_SYSTEM": SYSTEM,
        }
    )
    base, work = scratch.path, f"{scratch.path}/cli"
    data = f"{base}/data.txt"

    # Commands that change nothing run side by side.
    version, systems, nodes, partitions, reservations, ident, listing = await asyncio.gather(
        cli("server-version"),
        cli.json("systems"),
        cli.json("get-nodes"),
        cli.json("get-partitions"),
        cli.json("get-reservations"),
        cli("id"),
        cli.json("ls", base),
    )
    assert version.strip() == FIRECREST_API_VERSION
    assert [s["name"] for s in systems] == [SYSTEM]
    assert nodes and all("name" in node for node in nodes)
    assert partitions and isinstance(reservations, list)
    assert ident.startswith("uid=") and "(alice)" in ident
    assert {"data.txt", "tree"} <= {f["name"] for f in listing}
    head, tail, checksum, kind, st = await asyncio.gather(
        cli("head", "-n", "2", data),
        cli("tail", "-n", "+29", data),  # from line 29 on, as the CLI documents
        cli.json("checksum", data),
        cli("file", data),
        cli.json("stat", data),
    )
    assert (head, tail) == ("line 1\nline 2\n", "line 29\nline 30\n")
    assert checksum == {"algorithm": "SHA256", "checksum": hashlib.sha256(DATA).hexdigest()}
    assert kind.strip() == "ASCII text"
    assert st["size"] == len(DATA)

    await cli("mkdir", "-p", f"{work}/out")
    await cli("symlink", data, f"{work}/link")
    await cli("cp", data, f"{work}/copy.txt")
    await cli("mv", f"{work}/copy.txt", f"{work}/moved.txt")
    await cli("chmod", f"{work}/moved.txt", "600")
    await cli("chown", f"{work}/moved.txt", "--owner", "alice", "--group", "hpcproj")
    moved = await cli.json("stat", f"{work}/moved.txt")
    assert (stat.S_IMODE(moved["mode"]), moved["size"]) == (0o600, len(DATA))
    await cli("compress", f"{base}/tree", f"{work}/tree.tar.gz")
    await cli("extract", f"{work}/tree.tar.gz", f"{work}/out")
    unpacked = await cli.json("ls", "-R", f"{work}/out")
    assert sorted(f["name"] for f in unpacked) == [
        "tree",
        "tree/a.txt",
        "tree/sub",
        "tree/sub/b.bin",
    ]

    content = os.urandom(1000)
    (tmp_path / "up.bin").write_bytes(content)
    await cli("upload", str(tmp_path / "up.bin"), work, "up.bin")
    await cli("download", f"{work}/up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == content

    (info,) = await cli.json("job-info", scratch.job_id)
    assert info["status"]["state"] == "RUNNING"
    (metadata,) = await cli.json("job-metadata", scratch.job_id)
    assert metadata["standardOutput"] == f"{base}/shared.out"
    await cli("attach-to-job", scratch.job_id, f"echo attached > {work}/attached")
    assert json.loads(await cli("head", "--json", f"{work}/attached"))["content"] == "attached\n"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nsleep 600\n")
    own = str((await cli.json("submit", "--working-dir", work, str(script)))["jobId"])
    await cli("cancel", own)
    (done,) = await cli.json("wait-for-job", own)
    assert done["status"]["state"] == "CANCELLED"
    refused = await cli("job-info", UNKNOWN_JOB, status=1)
    assert "Job not found." in refused

    await cli("rm", "--force", work)
    assert "cli" not in {f["name"] for f in await cli.json("ls", base)}
    assert cli_commands() - cli.used == set()
