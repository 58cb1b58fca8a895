"""Large random files for the transfer tests: written here, hashed here and on the cluster."""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

from cluster_fixture import Cluster

BLOCK = 8 * 1024 * 1024


def sha256(path: Path) -> str:
    """The SHA-256 of the local file ``path``, read a block at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> None:
    """Write ``size`` random bytes to ``path``."""
    with path.open("wb") as file:
        for _ in range(size // BLOCK):
            file.write(os.urandom(BLOCK))
        file.write(os.urandom(size % BLOCK))


async def as_alice(cluster: Cluster, *argv: str) -> str:
    """Run ``argv`` (quoted) on the cluster as alice; its stdout, failing on a non-zero exit."""
    async with cluster.connect("alice") as conn:
        result = await conn.run(shlex.join(argv), check=True)
    return str(result.stdout)
