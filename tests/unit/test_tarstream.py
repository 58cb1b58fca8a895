"""The one tar-stream reader (filesystem/tarstream.py), on archives Python's tarfile writes.

The bulk download feeds it an archive in pieces as they arrive, the read
batches feed it a whole archive at once: both must see the same members.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from hpcgate.server.errors import ServiceError
from hpcgate.server.filesystem.tarstream import TAR_ARGV, Member, TarReader


class Recorder:
    """A sink that takes the data of every regular member and records what it saw."""

    def __init__(self) -> None:
        self.started: list[Member] = []
        self.files: dict[str, bytes] = {}
        self._open: bytearray | None = None

    def start(self, member: Member) -> bool:
        self.started.append(member)
        if not member.regular:
            return False
        self._open = bytearray()
        return True

    def data(self, piece: memoryview) -> None:
        assert self._open is not None
        self._open += piece

    def end(self) -> None:
        assert self._open is not None
        self.files[self.started[-1].name] = bytes(self._open)
        self._open = None


def archive_of(tar_format: int, files: dict[str, bytes]) -> bytes:
    """A tar of a directory ``/d/dir`` and ``files`` (name -> content) in ``tar_format``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        directory = tarfile.TarInfo("/d/dir")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o640, 1_700_000_000
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


FILES = {
    "/d/" + "n" * 150: bytes(range(256)) * 5,  # a GNU long name, or a pax path record
    "/d/ünï\ncode": b"x" * 512,
    "/d/empty": b"",
}


@pytest.mark.parametrize(
    "tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]
)
@pytest.mark.parametrize("piece", [1, 100, 512, 1 << 30])
def test_members_and_data_however_the_stream_is_cut(tar_format: int, piece: int) -> None:
    files = FILES if tar_format != tarfile.USTAR_FORMAT else {"/d/" + "p" * 120 + "/f": b"ok"}
    data = archive_of(tar_format, files)
    sink = Recorder()
    reader = TarReader(sink)
    for start in range(0, len(data), piece):
        reader.feed(data[start : start + piece])
    assert reader.ended and not reader.truncated
    assert [m.name for m in sink.started] == ["/d/dir", *files]
    assert sink.files == files
    assert all((m.mode, m.mtime) == (0o640, 1_700_000_000) for m in sink.started[1:])


def test_a_stream_cut_inside_a_member_is_truncated() -> None:
    data = archive_of(tarfile.GNU_FORMAT, {"/d/f": b"y" * 2000})
    reader = TarReader(Recorder())
    reader.feed(data[: 512 * 3])  # the directory, the file's header, 1 KiB of its data
    assert reader.truncated and not reader.ended


def test_a_corrupt_header_is_internal() -> None:
    data = bytearray(archive_of(tarfile.GNU_FORMAT, {"/d/f": b"z"}))
    data[0] ^= 0xFF  # the directory header's checksum no longer matches
    with pytest.raises(ServiceError) as caught:
        TarReader(Recorder()).feed(bytes(data))
    assert caught.value.reason == "TAR_MALFORMED"


def test_gnu_tar_output_with_hpcgates_argv(tmp_path: Path) -> None:
    """What the cluster's tar writes with TAR_ARGV (here the local GNU tar) reads back exactly."""
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: many blocks, cut anywhere by reads
    odd = tmp_path / ("q" * 120 + " \\\n$(x)")
    odd.write_bytes(b"odd")
    names = [str(big), str(odd)]
    archive = subprocess.run(
        TAR_ARGV, input=b"".join(n.encode() + b"\0" for n in names), capture_output=True, check=True
    ).stdout
    sink = Recorder()
    TarReader(sink).feed(archive)
    assert sink.files == {str(big): big.read_bytes(), str(odd): b"odd"}
