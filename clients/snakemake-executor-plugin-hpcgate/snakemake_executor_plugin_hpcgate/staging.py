"""Files between the workflow host and a cluster that shares no filesystem with it.

In staging mode the workflow directory (where Snakemake runs) is mirrored
under ``--hpcgate-remote-workdir`` on the cluster: a file ``a/b.txt`` of the
workflow lives at ``<remote-workdir>/a/b.txt`` there. Before a job is
submitted, the Snakefile and the job's input files go up over
``UploadStream`` (SHA-256 checked by the server); after the job, its output
and log files come back in one ``BulkDownload`` stream per batch of distinct
file names (each file SHA-256 checked). A file this plugin itself brought
down from the cluster is not sent up again: the remote copy is the same.

Only files under the workflow directory can be staged; an absolute path
elsewhere is a ``WorkflowError``, as is a directory output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from snakemake_interface_common.exceptions import WorkflowError

from hpcgate.client import AlreadyExists, Client, HpcgateError
from hpcgate.v1 import filesystem_pb2

F = filesystem_pb2


class Stager:
    """Uploads inputs and downloads outputs between ``local_root`` and ``remote_root``."""

    def __init__(self, client: Client, system: str, local_root: Path, remote_root: str) -> None:
        self._client = client
        self._system = system
        self.local_root = local_root.resolve()
        self.remote_root = PurePosixPath(remote_root)
        self._made: set[PurePosixPath] = set()
        self._in_place: dict[Path, tuple[int, int]] = {}  # local file -> (size, mtime_ns) there
        self.uploaded = 0  # files sent up (observability, tests)
        self.downloaded = 0  # files brought down

    def relative(self, path: str | os.PathLike[str]) -> PurePosixPath:
        """``path`` relative to the workflow directory (an error outside it)."""
        local = (self.local_root / path).resolve()
        try:
            return PurePosixPath(local.relative_to(self.local_root).as_posix())
        except ValueError:
            raise WorkflowError(
                f"hpcgate staging: {path} is outside the workflow directory {self.local_root}"
            ) from None

    def remote(self, path: str | os.PathLike[str]) -> str:
        """Where ``path`` of the workflow lives on the cluster."""
        return str(self.remote_root / self.relative(path))

    def ensure_directory(self, directory: PurePosixPath) -> None:
        """Create ``directory`` (and its parents) on the cluster, once."""
        if directory in self._made:
            return
        request = F.MkdirRequest(system_name=self._system, path=str(directory), parent=True)
        try:
            self._client.filesystem.Mkdir(request)
        except AlreadyExists:
            pass
        except HpcgateError as error:
            raise WorkflowError(f"hpcgate staging: mkdir {directory}: {error}") from None
        self._made.add(directory)

    def _files(self, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
        files: list[Path] = []
        for path in paths:
            local = self.local_root / path
            if local.is_dir():
                files.extend(sorted(p for p in local.rglob("*") if p.is_file()))
            elif local.is_file():
                files.append(local)
        return files

    def upload(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Send the files (directories: every file in them) to the cluster, unless there already."""
        for local in self._files(paths):
            stat = local.stat()
            if self._in_place.get(local.resolve()) == (stat.st_size, stat.st_mtime_ns):
                continue
            remote = self.remote(local)
            self.ensure_directory(PurePosixPath(remote).parent)
            try:
                self._client.upload(local, remote, system=self._system)
            except HpcgateError as error:
                raise WorkflowError(f"hpcgate staging: upload {local}: {error}") from None
            self._in_place[local.resolve()] = (stat.st_size, stat.st_mtime_ns)
            self.uploaded += 1

    def download(self, paths: Iterable[str | os.PathLike[str]], *, missing_ok: bool) -> None:
        """Bring the files back from the cluster into the workflow directory.

        A file the cluster lacks is an error unless ``missing_ok`` (logs of a failed job).
        """
        wanted = {self.relative(path) for path in paths}
        batches: list[dict[str, PurePosixPath]] = []
        for relative in sorted(wanted):
            batch = next((b for b in batches if relative.name not in b), None)
            if batch is None:
                batch = {}
                batches.append(batch)
            batch[relative.name] = relative
        for batch in batches:
            self._download_batch(batch, missing_ok=missing_ok)

    def _download_batch(self, batch: dict[str, PurePosixPath], *, missing_ok: bool) -> None:
        remote = [str(self.remote_root / relative) for relative in batch.values()]
        with tempfile.TemporaryDirectory(dir=self.local_root, prefix=".hpcgate-stage-") as into:
            try:
                result = self._client.download_many(remote, into, system=self._system)
            except HpcgateError as error:
                raise WorkflowError(f"hpcgate staging: download: {error}") from None
            if result.errors and not missing_ok:
                problems = "; ".join(f"{path}: {why}" for path, why in result.errors.items())
                raise WorkflowError(f"hpcgate staging: download: {problems}")
            for fetched in result.files:
                target = self.local_root / batch[fetched.name]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(fetched, target)
                stat = target.stat()
                self._in_place[target.resolve()] = (stat.st_size, stat.st_mtime_ns)
                self.downloaded += 1
