"""Resumable staged uploads: the parts S3 already holds, kept in a state file.

A staged upload writes one JSON file per (server, system, remote path, local
file) with the transfer it started (job id, presigned part URLs, completion
URL, part size) and each part's ETag as soon as S3 stored it. A later upload
of the same file to the same place, from this process or another one after
a crash or a kill, finds that file, checks that the local file is unchanged
and that the transfer still waits for its client, and sends only the
missing parts. The file is removed once the upload is completed.

The files hold presigned URLs: they are private to their owner (mode 0600).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpcgate.v1 import transfer_pb2

# Phases in which a transfer's job still waits for the client's parts.
WAITING = frozenset(
    {transfer_pb2.TRANSFER_PHASE_QUEUED, transfer_pb2.TRANSFER_PHASE_WAITING_FOR_CLIENT}
)


def default_dir() -> Path:
    """Where upload states live: ``$XDG_STATE_HOME/hpcgate/uploads`` (``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hpcgate" / "uploads"


@dataclass(frozen=True)
class Identity:
    """What an upload is: from which local file (as it is now) to which place."""

    target: str
    system: str
    remote: str
    local: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, target: str, system: str, remote: str, local: Path) -> Identity:
        """The identity of uploading ``local`` to ``remote`` on ``system`` of ``target``."""
        seen = local.stat()
        return cls(target, system, remote, str(local.resolve()), seen.st_size, seen.st_mtime_ns)

    def file_name(self) -> str:
        """The state file's name: the same for every upload of this file to this place."""
        where = json.dumps([self.target, self.system, self.remote, self.local])
        return hashlib.sha256(where.encode()).hexdigest()[:32] + ".json"


@dataclass
class UploadState:
    """A started staged upload and its parts stored so far (ETags by part index)."""

    identity: Identity
    job_id: int
    directives: transfer_pb2.TransferDirectives
    path: Path
    etags: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, directory: Path, identity: Identity) -> UploadState | None:
        """The state of this upload left by an earlier attempt; None if none fits.

        A state of another file (changed since: size or modification time) or
        one that cannot be read is none.
        """
        path = directory / identity.file_name()
        try:
            doc = json.loads(path.read_text())
            if Identity(**doc["identity"]) != identity:
                return None
            directives = transfer_pb2.TransferDirectives.FromString(
                base64.b64decode(doc["directives"])
            )
            etags = {int(index): str(etag) for index, etag in doc["etags"].items()}
            return cls(identity, int(doc["job_id"]), directives, path, etags)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def begin(
        cls,
        directory: Path,
        identity: Identity,
        started: transfer_pb2.TransferUploadResponse,
    ) -> UploadState:
        """The state of an upload just started, written to ``directory``."""
        path = directory / identity.file_name()
        state = cls(identity, started.transfer_job.job_id, started.transfer_directives, path)
        state._write()
        return state

    def record(self, index: int, etag: str) -> None:
        """Part ``index`` is stored in S3 with ``etag``: written before it counts as done."""
        with self._lock:
            self.etags[index] = etag
            self._write()

    def remove(self) -> None:
        """Forget the upload (completed, or no longer resumable)."""
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        doc = {
            "identity": asdict(self.identity),
            "job_id": self.job_id,
            "directives": base64.b64encode(self.directives.SerializeToString()).decode(),
            "etags": {str(index): etag for index, etag in sorted(self.etags.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(doc, out)
        os.replace(partial, self.path)  # a kill leaves the old state or the new, never half
