"""The edge's Content-Disposition for downloads: quoted and safe whatever the file name."""

from __future__ import annotations

from hpcgate.edge.headers import attachment


def test_attachment_quoting() -> None:
    assert attachment("out.txt") == 'attachment; filename="out.txt"'
    header = attachment('a"b\\c\r\nd.txt')
    assert "\r" not in header and "\n" not in header
    assert header.startswith("attachment; filename=\"a_b_c__d.txt\"; filename*=UTF-8''")
