"""The files the benchmarks read, created as alice over SSH with known content.

Every file's content is a function of its index, so any download can be
checked byte for byte without reading the file another way. All files
arrive in one remote command (``tar -x`` of an archive built in memory),
which keeps set-up to a second; the big directories' empty entries are
made by one ``touch`` per batch of names on the cluster (:func:`create_big`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from bench.model import WrongBytesError
from hpcgate.server.ssh import retry_channel_open
from hpcgate.server.ssh.credentials import CertificateAuthority

SMALL_COUNT = 1000  # the FirecREST workload: 1,000 files of 1 KB
SMALL_SIZE = 1024
BIG_COUNTS = (1000, 5300, 100_000)  # entries of the big directories
TINY_COUNT = 10  # entries of the directory the load scenario lists


def content(index: int) -> bytes:
    """The 1 KB content of small file ``index``: distinct per file, never all zeros."""
    block = hashlib.sha256(f"hpcgate-bench {index}".encode()).digest()
    return (block * (SMALL_SIZE // len(block) + 1))[:SMALL_SIZE]


def small_name(index: int) -> str:
    return f"f{index:04d}"


def big_name(index: int) -> str:
    return f"entry-{index:06d}"


@dataclass(frozen=True)
class Dataset:
    """Where the benchmark files are on the cluster."""

    root: str

    @property
    def small_dir(self) -> str:
        return f"{self.root}/small"

    def big_dir(self, count: int) -> str:
        return f"{self.root}/big-{count}"

    @property
    def tiny_dir(self) -> str:
        return f"{self.root}/tiny"

    def small_paths(self, count: int) -> list[str]:
        return [f"{self.small_dir}/{small_name(i)}" for i in range(count)]

    @staticmethod
    def big_names(count: int) -> list[str]:
        """The names in the directory of ``count`` entries, sorted."""
        return [big_name(i) for i in range(count)]


async def connect(cluster: dict[str, Any], user: str) -> asyncssh.SSHClientConnection:
    """One SSH connection as ``user`` with a certificate minted in memory from the CA.

    The host key is verified against the cluster's known_hosts, as the server does.
    """
    ssh = cluster["ssh"]
    ca_key = await asyncio.to_thread(Path(ssh["ca_key"]).read_text)
    authority = CertificateAuthority(ca_key, lifetime=3 * 3600)
    credentials = authority.mint(user)
    return await asyncssh.connect(
        ssh["host"],
        ssh["port"],
        username=user,
        client_keys=credentials.client_keys(),
        known_hosts=ssh["known_hosts"],
        agent_path=None,
        config=None,
        preferred_auth="publickey",
    )


class Link:
    """One SSH connection as a user, opened again when it was lost.

    Other test suites may restart the shared loopback sshd (recovery
    tests); a run that happens to overlap one then fails only the figure in
    flight, and the next figure gets a new connection.
    """

    def __init__(self, cluster: dict[str, Any], user: str) -> None:
        self._cluster, self._user = cluster, user
        self._conn: asyncssh.SSHClientConnection | None = None

    async def get(self) -> asyncssh.SSHClientConnection:
        """The connection, (re)connected if it is not open."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self._cluster, self._user)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _archive() -> bytes:
    """A tar archive of the small files (relative paths small/, tiny/)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        for i in range(SMALL_COUNT):
            add(f"small/{small_name(i)}", content(i))
        for i in range(TINY_COUNT):
            add(f"tiny/{small_name(i)}", content(i))
    return buffer.getvalue()


async def output(conn: asyncssh.SSHClientConnection, command: str, **run: Any) -> bytes:
    """Run ``command`` on a new exec channel; its standard output (non-zero exit raises).

    Opens the channel as the server's pool does: sshd frees a closed
    channel's session lazily, so an open right after a close may be refused
    once and must be retried.
    """
    result = await retry_channel_open(
        conn, lambda: conn.run(command, encoding=None, check=True, **run)
    )
    return result.stdout if isinstance(result.stdout, bytes) else b""


async def create(conn: asyncssh.SSHClientConnection, home: str) -> Dataset:
    """Create the dataset afresh under ``home`` (removing an older one) in one command.

    The folder is this run's own (``hpcgate-bench-<pid>``): benchmarks of
    other checkouts on the same cluster must not remove it under this one.
    """
    dataset = Dataset(f"{home}/hpcgate-bench-{os.getpid()}")
    root = shlex.quote(dataset.root)
    command = f"rm -rf -- {root} && mkdir -p -- {root} && tar -xf - -C {root}"
    await output(conn, command, input=_archive())
    return dataset


# Empty files entry-000000 ... in big-N, one touch per batch of names, made
# on the cluster: 100,000 tar headers would be 50 MB to send.
_BIG = """
cd -- "$1" && shift || exit 1
for n do
    mkdir "big-$n" && (cd "big-$n" && seq -f 'entry-%06.0f' 0 $((n - 1)) | xargs touch --) || exit 1
done
"""


async def create_big(
    conn: asyncssh.SSHClientConnection, dataset: Dataset, counts: tuple[int, ...]
) -> None:
    """Create the directories of ``counts`` empty entries (``big_name``) in one command."""
    args = " ".join(shlex.quote(a) for a in [dataset.root, *(str(n) for n in counts)])
    await output(conn, f"sh -c {shlex.quote(_BIG)} sh {args}")


async def remove(conn: asyncssh.SSHClientConnection, dataset: Dataset) -> None:
    await output(conn, f"rm -rf -- {shlex.quote(dataset.root)}")


def verify(files: list[bytes], what: str) -> None:
    """Raise :class:`WrongBytesError` unless ``files[i]`` is small file ``i``'s content."""
    for index, data in enumerate(files):
        if data != content(index):
            raise WrongBytesError(
                f"{what}: {small_name(index)} came back as {len(data)} bytes "
                f"that differ from the {SMALL_SIZE} bytes written"
            )
