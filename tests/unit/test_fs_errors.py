"""Cluster-side failures keep the words clients match on, whichever shell reported them."""

from __future__ import annotations

from dataclasses import dataclass

from hpcgate.server.errors import ErrorKind
from hpcgate.server.filesystem.errors import command_error


@dataclass(frozen=True)
class _Output:
    exit_status: int
    stdout: bytes
    stderr: bytes


def test_dash_redirection_errors_read_as_strerror() -> None:
    missing = command_error(["tar"], _Output(2, b"", b"tar: 6: cannot open /s/a.tar: No such file"))
    assert missing.code == ErrorKind.NOT_FOUND
    assert missing.message == "/s/a.tar: No such file or directory"
    denied = command_error(["sh"], _Output(2, b"", b"sh: 1: cannot open /s/x: Permission denied"))
    assert (denied.code, denied.message) == (
        ErrorKind.PERMISSION_DENIED,
        "/s/x: Permission denied",
    )


def test_other_tools_words_are_kept() -> None:
    error = command_error(
        ["rm"], _Output(1, b"", b"rm: cannot remove '/s/x': No such file or directory")
    )
    assert error.message == "rm: cannot remove '/s/x': No such file or directory"
