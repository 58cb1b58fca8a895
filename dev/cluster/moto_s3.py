"""The loopback cluster's S3 server: moto's, with each object's ETag computed under its lock.

moto (5.x) computes a key's ETag by seeking its shared buffer to 0 and
reading it in 16 MiB blocks, without the key's lock. A ListParts that
arrives while an UploadPart still hashes its body (the server polls a staged
download's progress so) reads the same buffer at once: both hashes come out
wrong, and the part's ETag no longer matches its bytes (a 200 MiB part: 13
blocks, every few runs). Real S3 has no such race; here the ETag takes the
lock that moto's ``value`` already takes. Arguments are ``moto.server``'s.
"""

from __future__ import annotations

import sys
from typing import Any

from moto.s3.models import FakeKey
from moto.server import main

_unlocked_etag = FakeKey.etag.fget


def _locked_etag(key: Any) -> str:
    with key.lock:
        return str(_unlocked_etag(key))


FakeKey.etag = property(_locked_etag)  # type: ignore[method-assign, assignment]

if __name__ == "__main__":
    main(sys.argv[1:])
