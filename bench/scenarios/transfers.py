"""Scenario: one large file up and down through each transfer method, against raw ``scp``.

The official pyfirecrest client, unchanged, uploads and downloads a file of
``TRANSFER_MIB`` MiB (1 GiB) with ``transfer_method`` ``s3``,
``streamer`` and ``wormhole``, each timed until the bytes are where they go (the upload's
job finished and its log passed pyfirecrest's check; the download's file
written); the floor is OpenSSH's ``scp`` of the same file, to and from the
same sshd, as alice (a certificate minted from the cluster's CA). Figures are
MB/s (10^6 bytes per second); ratios are over scp's figure for the same
direction. Every upload is checked on the cluster (SHA-256), every download
here, against the file's SHA-256. One file is one long sample: the scenario
takes two measured runs and no warm-up whatever the plan says.

Two accommodations of the client, both for pyfirecrest's sake: its session
gets no read timeout (it POSTs the s3 completion with httpx's default of
5 s, and the local S3 server, moto, takes longer to assemble a 1 GiB
object), and this process's PATH and environment are those of
``localsite.wormhole_client_env`` (the cluster's mailbox and relay, and the
shim for pyfirecrest's ``wormhole receive --code``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from firecrest.v2 import AsyncFirecrest

from bench.context import Context
from bench.measure import Plan, Stopwatch, measure
from bench.model import Figure, NotAvailableError, WrongBytesError
from bench.remote import output
from hpcgate.server.ssh.credentials import CertificateAuthority
from localsite import wormhole_client_env

SCENARIO = "transfers"
TRANSFER_MIB = int(os.environ.get("HPCGATE_BENCH_TRANSFER_MIB", "1024"))
METHODS = ("s3", "streamer", "wormhole")
CHUNK = 8 * 1024 * 1024


class _Token:
    """pyfirecrest's authorization contract."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_access_token(self) -> str:
        return self._token


def _write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            file.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _scp_options(cluster: dict[str, Any], folder: Path) -> list[str]:
    """scp's options for alice: a key and certificate minted now, the cluster's host keys."""
    ssh = cluster["ssh"]
    authority = CertificateAuthority(Path(ssh["ca_key"]).read_text(), lifetime=3 * 3600)
    credentials = authority.mint("alice")
    key = folder / "id_alice"
    credentials.key.write_private_key(str(key))
    key.chmod(0o600)
    assert credentials.certificate is not None
    credentials.certificate.write_certificate(str(folder / "id_alice-cert.pub"))
    return [
        "-q",
        "-P",
        str(ssh["port"]),
        "-i",
        str(key),
        "-o",
        f"UserKnownHostsFile={ssh['known_hosts']}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ]


async def _scp(options: list[str], source: str, target: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "scp", *options, source, target, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"scp {source} {target}: {err.decode().strip()[:300]}")


def _rate(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


async def run(ctx: Context) -> list[Figure]:
    """Measure scp both ways, then each method's upload and download."""
    size = TRANSFER_MIB * 1024 * 1024
    plan = Plan(warmup=0, reps=min(ctx.plan.reps, 2), timeout=max(ctx.plan.timeout, 1800))
    params: dict[str, Any] = {"MiB": TRANSFER_MIB}
    remote = f"{ctx.dataset.root}/transfer.bin"
    host, system = ctx.stack.cluster["ssh"]["host"], ctx.stack.system
    conn = await ctx.ssh.get()

    async def remote_sha() -> str:
        printed = await output(conn, shlex.join(["sha256sum", "--", remote]))
        return printed.decode().split()[0]

    async def clear_remote() -> None:
        await output(conn, shlex.join(["rm", "-f", "--", remote]))

    with tempfile.TemporaryDirectory(prefix="hpcgate-bench-") as temp:
        folder = Path(temp)
        local, fetched = folder / "transfer.bin", folder / "fetched.bin"
        want = await asyncio.to_thread(_write_random, local, size)
        options = await asyncio.to_thread(_scp_options, ctx.stack.cluster, folder)
        firecrest = AsyncFirecrest(ctx.stack.rest_url, _Token(ctx.stack.token()))
        firecrest._session.timeout = httpx.Timeout(None)  # the s3 completion (docstring)
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        client_env = wormhole_client_env(ctx.stack.cluster, bin_dir, os.environ["PATH"])
        saved_env = {name: os.environ.get(name) for name in client_env}
        os.environ.update(client_env)

        async def checked_up(send: Callable[[], Awaitable[None]], what: str) -> float:
            await clear_remote()
            watch = Stopwatch()
            await send()
            elapsed = watch.elapsed()
            if await remote_sha() != want:
                raise WrongBytesError(f"{what}: the file on the cluster differs")
            return _rate(size, elapsed)

        async def checked_down(fetch: Callable[[], Awaitable[None]], what: str) -> float:
            fetched.unlink(missing_ok=True)
            watch = Stopwatch()
            await fetch()
            elapsed = watch.elapsed()
            if await asyncio.to_thread(_sha256, fetched) != want:
                raise WrongBytesError(f"{what}: the downloaded file differs")
            return _rate(size, elapsed)

        def figure(name: str, baseline: str | None) -> Figure:
            return Figure(SCENARIO, name, "MB/s", dict(params), baseline=baseline)

        up_floor, down_floor = "scp upload floor", "scp download floor"
        figures = [
            await measure(
                figure(up_floor, None),
                plan,
                lambda: checked_up(
                    lambda: _scp(options, str(local), f"alice@{host}:{remote}"), up_floor
                ),
            ),
            await measure(
                figure(down_floor, None),
                plan,
                lambda: checked_down(
                    lambda: _scp(options, f"alice@{host}:{remote}", str(fetched)), down_floor
                ),
            ),
        ]

        async def method_figures(method: str) -> list[Figure]:
            directory, name = remote.rsplit("/", 1)

            async def up() -> None:
                upload = await firecrest.upload(
                    system, str(local), directory, name, transfer_method=method
                )
                if upload is None:
                    raise NotAvailableError(f"{method}: pyfirecrest uploaded directly")
                if method == "streamer":  # s3's and wormhole's blocking upload waited for the job
                    await upload.wait_for_transfer_job()

            async def down() -> None:
                await firecrest.download(system, remote, str(fetched), transfer_method=method)

            up_name, down_name = f"pyfirecrest {method} upload", f"pyfirecrest {method} download"
            return [
                await measure(figure(up_name, up_floor), plan, lambda: checked_up(up, up_name)),
                await measure(
                    figure(down_name, down_floor), plan, lambda: checked_down(down, down_name)
                ),
            ]

        try:
            for method in METHODS:
                figures += await method_figures(method)
        finally:
            await firecrest.close_session()
            await clear_remote()
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return figures
