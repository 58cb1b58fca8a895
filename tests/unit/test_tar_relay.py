"""BulkDownload's incremental tar reader (filesystem.bulk) on its own, without a cluster."""

from __future__ import annotations

import hashlib
import os
import tarfile

import pytest
from unit.test_tarstream import archive_of

from hpcgate.server.errors import ErrorKind
from hpcgate.server.filesystem import bulk


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("piece", [1, 7, 511, 512, 513, 4096, 1 << 30])
def test_relay_parses_the_archive_however_it_is_cut(tar_format: int, piece: int) -> None:
    """The incremental reader on its own: any split of the stream gives the same events."""
    files = {
        "/d/" + "n" * 150: os.urandom(1000),  # a GNU long name, or a pax path record
        "/d/ünï\ncode": b"x" * 512,
        "/d/empty": b"",
        "/d/unasked": b"skipped",
    }
    data = archive_of(tar_format, files)
    wanted = ["/d/dir", "/d/" + "n" * 150, "/d/ünï\ncode", "/d/empty", "/d/missing"]
    relay = bulk.TarRelay([bulk.Target(i, p, "") for i, p in enumerate(wanted)], 300)
    for start in range(0, len(data), piece):
        relay.feed(data[start : start + piece])
    relay.finish({"/d/missing": "/d/missing: Cannot stat: No such file or directory"})
    batches = relay.take()
    assert all(sum(len(e.data) for e in b if isinstance(e, bulk.BulkChunk)) <= 300 for b in batches)
    events = [event for batch in batches for event in batch]

    errors = {e.index: e for e in events if isinstance(e, bulk.BulkError)}
    assert errors[0].code == ErrorKind.INVALID_ARGUMENT  # a directory
    assert errors[4].code == ErrorKind.NOT_FOUND
    assert set(errors) == {0, 4}
    for index in (1, 2, 3):
        content = files[wanted[index]]
        own = [e for e in events if e.index == index]
        header, *chunks, end = own
        assert isinstance(header, bulk.BulkHeader) and isinstance(end, bulk.BulkEnd)
        assert (header.size, header.mode, header.mtime) == (len(content), 0o100640, 1_700_000_000)
        assert b"".join(c.data for c in chunks if isinstance(c, bulk.BulkChunk)) == content
        assert end.sha256 == hashlib.sha256(content).hexdigest()
