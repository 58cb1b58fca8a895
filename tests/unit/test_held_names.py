"""The names a held batch step gives tar, split off the archive after them (filesystem.held)."""

from __future__ import annotations

import pytest

from hpcgate.server.filesystem.held import HeldNames, unheld, why_unheld


@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_names_then_archive_however_the_stream_is_cut(piece: int) -> None:
    stream = b"/proc/self/fd/10/a\0\0./b\nc\0" + b"ARCHIVE\0\0"
    held = HeldNames(3)
    archive = b""
    for start in range(0, len(stream), piece):
        archive += held.feed(stream[start : start + piece])
    assert held.names == ["/proc/self/fd/10/a", "", "./b\nc"]
    assert archive == b"ARCHIVE\0\0"


def test_no_names_until_all_are_in_and_none_for_no_paths() -> None:
    held = HeldNames(2)
    assert held.feed(b"a\0b") == b"" and held.names is None
    assert HeldNames(0).feed(b"X") == b"X"


def test_why_a_directory_was_not_held_is_told_of_its_files() -> None:
    reasons = unheld("hpcgate: unheld: 11 Permission denied\ntar: other\n")
    assert why_unheld("/proc/self/fd/11/x", reasons) == "Permission denied"
    assert why_unheld("/proc/self/fd/10/x", reasons) is None
    assert why_unheld("./x", reasons) is None
