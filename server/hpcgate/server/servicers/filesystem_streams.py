"""Filesystem RPCs that move file contents: small download/upload, streams, bulk.

(Being written; the Filesystem servicer inherits these methods.)
"""

from __future__ import annotations

from hpcgate.server.runtime import Runtime
from hpcgate.v1 import filesystem_pb2_grpc


class FilesystemStreams(filesystem_pb2_grpc.FilesystemServicer):
    """Download, Upload, DownloadStream, UploadStream and BulkDownload."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
